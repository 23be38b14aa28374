"""Live catalog sync (catalog.sourceType `azure`, operator/azure_catalog.py) against tests/support/azure_fake.py, a
loopback fake that STANDS IN FOR THE AZURE CATALOG SERVICE (ai.azure.com cannot be reached from a test machine): the
entities of several pages are mapped onto catalog entries, the samples are kept in embedded mode, a failing region
is skipped, and a catalog service that fails keeps the last good catalog.
"""
import dataclasses
import datetime
import json

import pytest

from foundry_inference.operator import catalog_sync, names
from tests.support.azure_fake import AzureFake
from tests.unit.operator.factories import settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def entity(name, version, alias, device, ep, size=1000, **tags):
    return {"annotations": {"tags": {"alias": alias, "task": "chat-completion", "license": "MIT",
                                     "foundryLocal": "", **tags},
                            "systemCatalogData": {"publisher": "Microsoft", "displayName": alias.title(),
                                                  "maxOutputTokens": 4096}},
            "properties": {"name": name, "version": version,
                           "variantInfo": {"variantMetadata": {"device": device, "executionProvider": ep,
                                                               "fileSizeBytes": size}}}}


@pytest.fixture
def fake(monkeypatch):
    with AzureFake(page_size=2) as azure:
        for key, value in azure.env().items():
            monkeypatch.setenv(key, value)
        azure.catalog = [
            entity("Phi-4-mini-instruct-generic-cpu", "5", "phi-4-mini", "CPU", "CPUExecutionProvider", 5153960755,
                   promptTemplate='{"user": "<|user|>{Content}<|end|>", "assistant": "{Content}"}',
                   supportsToolCalling="true"),
            entity("Phi-4-mini-instruct-cuda-gpu", "5", "phi-4-mini", "GPU", "CUDAExecutionProvider"),
            entity("qwen2.5-0.5b-instruct-generic-cpu", "4", "qwen2.5-0.5b", "CPU", "CPUExecutionProvider"),
            {"properties": {"name": "broken"}},                       # no version, no device: skipped
            entity("Mistral-7B-npu", "2", "mistral-7b", "NPU", "QNNExecutionProvider")]
        yield azure


def azure_settings(ns, fake, embedded=False):
    cfg = settings(ns, catalog={"sourceType": "azure", "azureCatalogUrl": f"{fake.base}/catalog/{{region}}"})
    return dataclasses.replace(cfg, embedded=embedded)


def test_the_live_catalog_is_mapped_paged_and_merged_with_the_samples(fake, embedded_store):
    fake.failing_regions = {"centralus"}
    sync = catalog_sync.CatalogSync(embedded_store, azure_settings("ops", fake, embedded=True))
    catalog = sync.tick(T0)
    assert sync.last_error is None
    bodies = fake.catalog_bodies
    assert len(bodies) == 3                                       # 5 entities, pages of 2, continuationToken
    fields = {f["field"] for f in bodies[0]["indexEntitiesRequest"]["filters"]}
    assert {"type", "kind", "labels", "annotations/tags/foundryLocal",
            "properties/variantInfo/variantMetadata/device"} <= fields
    phi = catalog.find("phi-4-mini")
    assert phi["publisher"] == "Microsoft" and phi["license"] == "MIT" and phi["task"] == "chat-completion"
    cpu = next(v for v in phi["variants"] if v["compute"] == "cpu")
    assert cpu == {"id": "Phi-4-mini-instruct-generic-cpu:5", "name": "Phi-4-mini-instruct-generic-cpu",
                   "version": "5", "compute": "cpu", "executionProvider": "CPUExecutionProvider",
                   "fileSizeBytes": 5153960755, "maxOutputTokens": 4096, "supportsToolCalling": True,
                   "promptTemplate": {"user": "<|user|>{Content}<|end|>", "assistant": "{Content}"},
                   "artifact": {"uri": "azureml://registries/azureml/models/Phi-4-mini-instruct-generic-cpu/"
                                       "versions/5"}}
    assert {v["compute"] for v in phi["variants"]} == {"cpu", "gpu"}
    assert catalog.find("mistral-7b")["variants"][0]["compute"] == "npu"
    assert catalog.find("broken") is None
    assert catalog.find("iris-classifier") is not None, "embedded mode keeps the samples"
    assert catalog.doc["region"] == "eastus"                      # detected: downloads try it first
    from foundry_inference.operator import resolve
    from foundry_inference.operator.spec import from_model_deployment
    spec = from_model_deployment({"spec": {"model": {"catalog": {"name": "phi-4-mini"}}, "compute": "cpu"}})
    artifact = resolve.resolve(spec, sync.settings, catalog, {}).artifact
    assert artifact["region"] == "eastus" and artifact["promptTemplate"]["assistant"] == "{Content}"
    cm = embedded_store.get("ConfigMap", "ops", names.CATALOG_CONFIGMAP)
    assert cm["metadata"]["annotations"][names.CATALOG_VERSION].startswith("azure-")
    assert json.loads(cm["data"][names.CATALOG_KEY])["models"]


def test_a_failing_catalog_service_keeps_the_last_good_catalog(fake, embedded_store):
    sync = catalog_sync.CatalogSync(embedded_store, azure_settings("ops", fake))
    sync.tick(T0)
    good = embedded_store.get("ConfigMap", "ops", names.CATALOG_CONFIGMAP)["data"][names.CATALOG_KEY]
    assert json.loads(good)["models"] and sync.catalog.find("iris-classifier") is None   # not embedded: no samples
    from foundry_inference.operator import azureml
    fake.failing_regions = set(azureml.FALLBACK_REGIONS)
    catalog = sync.tick(T0 + datetime.timedelta(hours=7))
    assert catalog.find("phi-4-mini") is not None
    cm = embedded_store.get("ConfigMap", "ops", names.CATALOG_CONFIGMAP)
    assert cm["data"][names.CATALOG_KEY] == good
    assert "no catalog region answered" in cm["metadata"]["annotations"][names.SYNC_ERROR]
    fake.failing_regions = set()
    fake.catalog = [{"properties": {"name": "broken"}}]                     # nothing usable: refused too
    sync.tick(T0 + datetime.timedelta(hours=14))
    cm = embedded_store.get("ConfigMap", "ops", names.CATALOG_CONFIGMAP)
    assert cm["data"][names.CATALOG_KEY] == good
    assert "none could be used" in cm["metadata"]["annotations"][names.SYNC_ERROR]
