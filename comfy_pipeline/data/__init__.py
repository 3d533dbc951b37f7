"""Package data: the shipped prompt library (prompt_library.json)."""
