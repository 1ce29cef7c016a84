# host/ is a host app fixture with its own tests: they run inside a fresh virtualenv
# (test_adoption.py), never in this suite's interpreter.
collect_ignore = ["host"]
