"""The database: the tables, engines and migrations, and copying a whole history."""
