"""The fuzzing settings of issue #29's parser and loader tests (hypothesis): 150 examples each, no deadline."""

from hypothesis import HealthCheck, settings

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
