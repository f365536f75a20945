"""
The test suite: a package, so that both ``python -m twisted.trial tests`` and
``python -m pytest`` import its modules as ``tests.*``.  Every test is a
L{twisted.trial.unittest} test case method, so both runners collect the same tests.
"""
