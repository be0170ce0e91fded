"""One target's cycle: debounce, render, decide, validate, write, reload, report."""
