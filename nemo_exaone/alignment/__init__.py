"""Post-training alignment: preference losses, reward models, preference data."""
