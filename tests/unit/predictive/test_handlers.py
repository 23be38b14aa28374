"""Handlers before the model is loaded (the window between listening and ready)."""
import json

import pytest
from tornado.testing import AsyncHTTPTestCase

from foundry_inference.apps.predictive.server import make_app
from foundry_inference.apps.predictive.service import PredictiveService
from foundry_inference.apps.predictive.settings import PredictiveSettings
from tests.support import models
from tests.unit.predictive.harness import body_for, no_auth

pytestmark = pytest.mark.unit


class NotReadyTest(AsyncHTTPTestCase):
    def get_app(self):
        settings = PredictiveSettings.from_env({"FOUNDRY_MODEL_PATH": models.iris_logreg().path})
        self.service = PredictiveService(settings)
        return make_app(settings, auth=no_auth(), service=self.service, load=False)

    def test_health_yes_ready_no(self):
        assert json.loads(self.fetch("/health").body) == {"status": "ok"}
        response = self.fetch("/ready")
        assert response.code == 503
        assert json.loads(response.body) == {"detail": "Model not loaded yet"}

    def test_predict_and_model_wait_for_the_model(self):
        for path, kwargs in (("/v1/model", {}), ("/v1/predict", {"method": "POST", "body": json.dumps(
                body_for([[1, 2, 3, 4]]))})):
            response = self.fetch(path, **kwargs)
            assert response.code == 503
            assert json.loads(response.body) == {"detail": "Model not loaded yet"}

    def test_a_failed_load_is_reported(self):
        self.service.load_error = "cannot load model.onnx: bad protobuf"
        response = self.fetch("/ready")
        assert response.code == 503
        assert json.loads(response.body)["detail"] == "Model failed to load: cannot load model.onnx: bad protobuf"

    def test_after_loading_everything_answers(self):
        self.service.load()
        assert self.fetch("/ready").code == 200
        response = self.fetch("/v1/predict", method="POST", body=json.dumps(body_for([[5.1, 3.5, 1.4, 0.2]])))
        assert response.code == 200
