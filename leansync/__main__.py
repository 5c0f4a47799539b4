from leansync.cli import main

main()
