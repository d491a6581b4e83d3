"""Full screens and modal dialogs of the TUI (help, errors, model picker)."""
