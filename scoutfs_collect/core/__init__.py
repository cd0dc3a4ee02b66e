"""The lifecycle: cli -> profile -> registry -> runner (phases) -> archive.

Only the core drives plugins; plugins never import from here."""
