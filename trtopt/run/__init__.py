"""The application layer: what a recipe run does beyond the stage facades (the RTX engine column)."""
