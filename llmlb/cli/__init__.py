"""The `llmlb` command line: thin HTTP clients, plus the two servers."""
