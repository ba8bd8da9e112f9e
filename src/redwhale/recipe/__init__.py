"""The recipe: the phases of a run as typed functions, the runner that skips and resumes them, the run
directory, the report and the status (see ARCHITECTURE.md)."""
