"""Identity providers' key sets (SPEC §14): fetching, the shared last good set."""
