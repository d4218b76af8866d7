"""The chaos campaign (`make chaos`): faults injected into a replicated, secured stack while
a simulated fleet sends updates, and an independent oracle that checks the outcome."""
