"""The Textual app behind ``lminspect tui``.

Nothing is imported here on purpose: ``lminspect --help`` and every headless
command must not pay for (or depend on) textual. Import ``lminspect.tui.app``
inside the command that runs the app.
"""
