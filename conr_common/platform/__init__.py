"""File-system and machine helpers: errors, atomic writes, locks, checksums, the output guard, cpu, memory, versions, quiet."""
