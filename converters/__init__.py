"""Exporters, one module per target, behind one interface (see base.py)."""
