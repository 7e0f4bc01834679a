"""nixsnake: date-locked, nix-built SIF images for Snakemake rules."""

__version__ = "0.1.0"
