import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _float32_policy_and_fresh_session(request):
    """Each test starts from the float32 policy and an empty Keras session.

    A module that builds no Keras model sets `KERAS_FREE = True`: clearing the session (a full garbage
    collection, about a second per test on a loaded 2-core machine) buys it nothing.
    """
    if getattr(request.module, "KERAS_FREE", False):
        yield
        return
    import keras

    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
