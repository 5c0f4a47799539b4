"""The history's write side: the pure diff, the writer, one sync run, and the run lock."""
