"""The tiny random chat model (built once, cached) and a chat server serving it."""
import pytest

from tests.support.chat_models import require, tiny_chat_model
from tests.unit.chat.harness import ChatServer


@pytest.fixture(scope="session")
def tiny_model():
    return require(tiny_chat_model)


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    with ChatServer(tiny_model, env={"FOUNDRY_MODEL_ID": "tiny-chat"}) as server:
        yield server


@pytest.fixture(scope="module")
def tiny_engine(tiny_model):
    from foundry_inference.apps.chat.engine import open_engine
    from foundry_inference.apps.chat.settings import ChatSettings
    engine = open_engine(tiny_model, ChatSettings(model_path=tiny_model, model_id="tiny", max_batch=4,
                                                  queue_depth=8, prefill_threads=1))
    engine.load()
    yield engine
    engine.close()
