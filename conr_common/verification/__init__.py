"""What the parity checks share: float tolerances with their reasons, the array diff, the seeded weight draws."""
