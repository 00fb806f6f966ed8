"""Marks shared by the suites that start vLLM engines."""

import pytest

# vLLM and torch warn at import and on engine start-up; none of it is ours, and the run treats
# warnings as errors otherwise.
ENGINE_NOISE = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
