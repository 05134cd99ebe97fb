"""Weight files: safe checkpoint readers and writers, weight folders and their checks."""
