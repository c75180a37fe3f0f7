"""The rules: task records, states, transitions, validation, errors, cursors, ids and codecs.

Also the clock and the JSON form.  Nothing here imports any other part of the package, and
nothing here does I/O beyond reading the clock: every other part builds on these modules.
"""
