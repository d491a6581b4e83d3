"""Widgets of the TUI: one module per tab, plus the plot widget they share."""
