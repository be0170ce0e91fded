"""The command line: parsing, the commands, exit statuses. The only place that exits.

`parser` builds the arguments, `main` runs a command and maps errors to exit statuses
(`exits`); `commands` holds run, once, render and check, `traffic` split and rollout,
`register` and `status` their own commands; `progress` and `logformat` are their output.
"""
