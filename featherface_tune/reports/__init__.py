"""Presentation: rich tables and report bundles built from counts and studies."""
