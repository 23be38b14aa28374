"""A Foundry catalog model downloaded on the real cluster through the `azureml://` protocol itself: the model-fetcher
init container asks the registry gateway, lists the blob container and downloads ranged blobs from
tests/support/azure_fake.py, a fake that STANDS IN FOR THE AZURE CLOUD SERVICES (api.azureml.ms, Azure Blob
Storage: unreachable here). The fake runs in this test process but listens INSIDE the cluster's network namespace
(its socket is created by a thread that joined it), on the node's private address, over https with a CA of the
test's own: the release points at it with the documented chart values (catalog.azure.registryUrl, the address in
api.config.registryAllowlist, its CA in registryTrust.caBundles); the SSRF guard stays on and nothing is routed
outside the namespace. The shipped catalog's `qwen2.5-coder-0.5b` cpu variant is served with the SmolLM2 ONNX GenAI
folder laid out as Foundry Local finds it (`v4/genai_config.json`, ...), its first region failing with 503.

Covered: deployed by name through the control plane; with the fake throttled, the deployment's status (read through
the control plane API) shows the download's progress (`ModelDownloading`, bytes done / total, increasing); the
fetcher killed mid-download is restarted by the kubelet and resumes from the pod's model volume; Running, then a
streamed chat completion with the official `openai` client through the deployment's Service over TLS. A second
deployment downloads the model again (each pod's model volume is its own emptyDir: docs/catalog.md). A model the
registry does not know and a blob that fails its size check end in state Error naming the cause, with no model
server started. With the model cache on (storeModel.enabled, on a hostPath volume of the test's storage class), the
StoreModel's Job downloads it once: its fetch pod killed mid-download is followed by one that resumes, and a second
deployment downloads nothing. The release's values are restored at the end.
"""
import copy
import json
import os
import re
import ssl
import time
from pathlib import Path

import pytest

from tests.e2e.cluster_support import (
    NS,
    NUMBERS,
    STORE_LABEL,
    cache_values,
    cache_volume,
    deleted_after,
    expose,
    fetched_from,
    live,
    pod_report,
    store_models,
    stream_chat,
    upgrade_operator,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(1800)]
ALIAS, NAME, VERSION = "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-generic-cpu", "4"
BYTES, PCT = re.compile(r"(\d+) bytes"), re.compile(r"\((\d+)%\)")      # '0 bytes of 85.9 MiB (90038434 bytes) (0%)'
MIB = 1 << 20


@pytest.fixture(scope="module")
def azure(node, core, net, release, tmp_path_factory):
    """The Azure fake serving the catalog variant, inside the cluster's network namespace; the release pointed at
    it (and back to its values afterwards)."""
    from tests.kube import pki
    from tests.support import chat_models
    from tests.support.azure_fake import AzureFake
    model = chat_models.require(chat_models.smollm2_model)
    address = node.info_dict["node_ip"]
    ca, cert, key = pki.write_ca_and_cert(tmp_path_factory.mktemp("azure-pki"), "azure", [address], [])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    fake = net.call(AzureFake, host=address, tls=tls)        # its listening socket lives in the namespace
    fake.__enter__()
    try:
        files = {f"v{VERSION}/{name}": Path(model, name).read_bytes() for name in sorted(os.listdir(model))
                 if not name.startswith(".") and Path(model, name).is_file()}
        files["LICENSE"] = b"apache-2.0"
        fake.model_files = files
        fake.uri = fake.add_model(NAME, VERSION, files, description="SmolLM2 as the qwen2.5-coder cpu variant")
        fake.failing_regions = {"centralus"}
        values = copy.deepcopy(release["values"])
        values["catalog"] = {"azure": {"registryUrl": f"{fake.base}/registry/{{region}}"}}   # and no mirror
        values["api"]["config"]["registryAllowlist"] = [*values["api"]["config"]["registryAllowlist"], fake.host]
        values["registryTrust"]["caBundles"][fake.host] = Path(ca).read_text()
        fake.values = values
        upgrade_operator(node, core, values)
        try:
            yield fake
        finally:
            upgrade_operator(node, core, release["values"])
    finally:
        fake.__exit__(None, None, None)


def _pod(core, name):
    pods = core.list_namespaced_pod(NS, label_selector=f"foundry.azure.com/deployment={name}").items
    return pods[0] if pods else None


def _kill_fetcher(node, core, name):
    from tests.kube.node import kill_pod_processes_matching
    pod = _pod(core, name)
    return kill_pod_processes_matching(node, "foundry_inference.operator.fetch", pod.metadata.uid)


def test_a_catalog_model_downloads_with_progress_resumes_after_a_kill_and_answers(node, core, net, platform, azure):
    total = sum(len(v) for v in azure.model_files.values())
    azure.delay = 3.0                       # seconds per 2 MiB range, 4 at a time: ~3 MiB/s, about half a minute
    started = time.monotonic()
    net.call(platform.deploy, "qwen-azureml", {"catalog": {"name": ALIAS}}, namespace=NS)
    with deleted_after(net, platform, "qwen-azureml"):
        seen, states, killed = [], [], None          # seen: (done, of, pct, resumed?) from the status, in order
        deadline = time.monotonic() + 600
        while True:
            live(node)
            assert time.monotonic() < deadline, f"not Running after 600 s; states {states}; seen {seen}\n" \
                                                f"{pod_report(core)}"
            status = net.call(platform.deployment, "qwen-azureml", NS)["status"]
            if not states or states[-1] != status["state"]:
                states.append(status["state"])
            assert azure.sig not in json.dumps(status), "a SAS token reached the status"
            cond = next((c for c in status["conditions"] if c["type"] == "ModelDownloading"), None)
            if cond:
                (done, of), pct = map(int, BYTES.findall(cond["message"])[:2]), int(PCT.search(cond["message"])[1])
                assert "downloading the model: " in status["message"] and status["state"] == "Creating", status
                if not seen or seen[-1][:3] != (done, of, pct):
                    seen.append((done, of, pct, "resumed after: " in cond["message"]))
                    assert not seen[-1][3] or cond["message"].endswith(
                        "; resumed after: model fetch failed (attempt 1): exited with 137 (Error)"), cond
            if status["state"] == "Running":
                break
            if status["state"] == "Error":
                # only between the kill and the kubelet's restart of the fetcher: its exit, then progress again
                assert killed and "model fetch failed (attempt 1): exited with 137" in status["message"], status
            if killed is None and seen and azure.bytes_served() >= 30 * MIB:
                killed = (_kill_fetcher(node, core, "qwen-azureml"), azure.bytes_served())
                assert killed[0], "no fetcher process found in the pod"
            time.sleep(0.5)
        NUMBERS["azureml catalog model (86 MB at ~3 MiB/s, one fetcher kill) create -> Running (s)"] = \
            round(time.monotonic() - started, 1)
        print(f"\nprogress seen on the status: {seen}\nstates: {states}", flush=True)

        # progress: bytes done / total, increasing; the same total as the listing; seen again after the kill
        before = [s for s in seen if not s[3]]
        after = [s for s in seen if s[3]]
        assert before and after, seen
        assert all(of == total for _d, of, _p, _r in before), (total, seen)
        assert [s[0] for s in before] == sorted(s[0] for s in before), seen
        assert len({s[2] for s in seen}) >= 3, seen                     # at least three percentages on the status
        # resumed: what was downloaded before the kill was not downloaded again
        served = azure.bytes_served()
        assert total <= served < total + killed[1] // 2, (total, served, killed)

        artifact, cas, env = fetched_from(core, "qwen-azureml")
        assert artifact["type"] == "uri" and artifact["uri"] == azure.uri, artifact
        assert env["FOUNDRY_AZUREML_REGISTRY_URL"] == f"{azure.base}/registry/{{region}}", env
        assert azure.host in cas and "FOUNDRY_FETCH_INSECURE" not in env, env      # https, verified by its CA
        lookups = [(p.split("/")[2], s) for m, p, _r, s in azure.requests if p.startswith("/registry/")]
        assert lookups[:2] == [("centralus", 503), ("eastus", 200)], lookups
        fetcher = _pod(core, "qwen-azureml").status.init_container_statuses[0]
        assert fetcher.restart_count == 1, fetcher

        status = net.call(platform.deployment, "qwen-azureml", NS)["status"]
        endpoint = expose(core, net, NS, status["internalEndpoint"])
        platform._ca = platform.ca_path()
        key = net.call(platform.keys, "qwen-azureml", NS)[0]
        pieces = net.call(stream_chat, platform, endpoint, key, ALIAS)
        assert len(pieces) > 1 and "".join(pieces).strip(), pieces


def test_a_second_deployment_downloads_the_model_again_at_full_speed(node, core, net, platform, azure):
    """On a cluster each pod's model volume is its own emptyDir (its `.foundry-cache` included): a second deployment
    (or a pod the Deployment replaces) downloads the model again; only a fetcher restarted in the same pod resumes."""
    total = sum(len(v) for v in azure.model_files.values())
    azure.delay = 0
    wait_for(node, lambda: _pod(core, "qwen-azureml") is None, 180, "the first deployment's pod to be gone")
    served, ranges = azure.bytes_served(), len(azure.range_times)
    started = time.monotonic()
    net.call(platform.deploy, "qwen-azureml-2", {"catalog": {"name": ALIAS}}, namespace=NS)
    with deleted_after(net, platform, "qwen-azureml-2"):
        wait_state(node, core, net, platform, "qwen-azureml-2", "Running", 600)
        NUMBERS["azureml catalog model (86 MB, unthrottled) create -> Running (s)"] = \
            round(time.monotonic() - started, 1)
        assert azure.bytes_served() - served == total
        times = azure.range_times[ranges:]
        seconds = max(times[-1] - times[0], 0.001)
        NUMBERS["azureml download in the init container (86 MB): s, MiB/s"] = [round(seconds, 1),
                                                                               round(total / MIB / seconds, 1)]


def test_an_unknown_model_and_a_blob_failing_its_size_check_are_errors_with_their_cause(node, core, net, platform,
                                                                                      azure):
    azure.delay = 0
    azure.add_model("Phi-4-generic-cpu", "1", {"v1/genai_config.json": b'{"model": {"type": "phi3"}}',
                                                "v1/model.onnx": os.urandom(300_000)})
    azure.listed_sizes = {"v1/model.onnx": 200_000}            # the listing says less than the blob holds
    cases = {"phi35-unknown": ("phi-3.5-mini", "azureml://registries/azureml/models/Phi-3.5-mini-instruct-generic-cpu"
                                               "/versions/1: the model registry answered not found"),
             "phi4-size": ("phi-4", "v1/model.onnx: size check failed: the blob has 300000 bytes, the listing said "
                                    "200000")}
    started = {}
    for name, (alias, _cause) in cases.items():
        started[name] = time.monotonic()
        net.call(platform.deploy, name, {"catalog": {"name": alias}}, namespace=NS)
    try:
        for name, (_alias, cause) in cases.items():
            status = wait_state(node, core, net, platform, name, "Error", 180)
            NUMBERS[f"azureml {name} create -> Error (s)"] = round(time.monotonic() - started[name], 1)
            print(f"\n{name}: {status['message']}", flush=True)
            assert status["message"].startswith("model fetch failed (attempt ") and cause in status["message"], status
            assert azure.sig not in json.dumps(status)
            servers = [c for c in _pod(core, name).status.container_statuses or [] if c.name == "model-server"]
            assert all(c.state.running is None and c.restart_count == 0 for c in servers), servers  # never started
    finally:
        azure.listed_sizes = {}
        for name in cases:
            net.call(platform.delete, name, NS)


def test_with_the_model_cache_a_catalog_model_is_downloaded_once_and_a_killed_fetch_resumes(node, core, net,
                                                                                            platform, azure):
    """storeModel.enabled: the StoreModel's Job downloads the model into its claim; its fetch pod killed mid-download
    is followed by a new pod that resumes from the cache in the volume (nothing downloaded twice); the deployment
    shows the progress meanwhile; a second deployment of the model downloads nothing and answers."""
    total = sum(len(v) for v in azure.model_files.values())
    wait_for(node, lambda: _pod(core, "qwen-azureml-2") is None, 180, "the earlier deployments' pods to be gone")
    with cache_volume(node, core, "foundry-e2e-azureml-pv"):
        upgrade_operator(node, core, cache_values(azure.values))
        try:
            azure.delay = 3.0                      # ~3 MiB/s: time to see the progress and to kill the fetcher
            served = azure.bytes_served()
            started = time.monotonic()
            net.call(platform.deploy, "qwen-cached", {"catalog": {"name": ALIAS}}, namespace=NS)
            with deleted_after(net, platform, "qwen-cached"):
                killed, progress = None, []
                deadline = time.monotonic() + 600
                while True:
                    live(node)
                    assert time.monotonic() < deadline, f"not Running after 600 s; {progress}\n{pod_report(core)}"
                    status = net.call(platform.deployment, "qwen-cached", NS)["status"]
                    stored = store_models(node, f"{NAME}:{VERSION}")
                    assert azure.sig not in json.dumps(status) and azure.sig not in json.dumps(stored)
                    if status["state"] == "Running":
                        break
                    assert status["state"] in (None, "Creating"), status     # None: not reconciled yet
                    if status["message"] and status["message"] not in progress:
                        progress.append(status["message"])
                    if killed is None and azure.bytes_served() - served >= 30 * MIB:
                        (pod,) = [p for p in core.list_namespaced_pod(NS, label_selector=STORE_LABEL).items
                                  if p.status.phase == "Running"]
                        from tests.kube.node import kill_pod_processes_matching
                        killed = (kill_pod_processes_matching(node, "foundry_inference.operator.fetch",
                                                              pod.metadata.uid), azure.bytes_served() - served)
                        assert killed[0], "no fetcher process in the fetch pod"
                    time.sleep(0.5)
                NUMBERS["model cache: azureml model (86 MB at ~3 MiB/s, one fetch pod killed) create -> Running "
                        "(s)"] = round(time.monotonic() - started, 1)
                print(f"\nstatus messages while storing: {progress}", flush=True)
                assert killed, "the download finished before 30 MiB were served"
                downloaded = azure.bytes_served() - served
                assert total <= downloaded < total + killed[1] // 2, (total, downloaded, killed)   # resumed
                assert any("downloading the model: downloading " in m and "(StoreModel " in m for m in progress), \
                    progress
                assert any("retrying after: exited with 137" in m for m in progress), progress
                (sm,) = store_models(node, f"{NAME}:{VERSION}")
                assert sm["status"]["phase"] == "Available" and sm["status"]["sizeBytes"] == total, sm["status"]
                phases = sorted(p.status.phase for p in core.list_namespaced_pod(
                    NS, label_selector=f"{STORE_LABEL}={sm['metadata']['name']}").items)
                assert phases == ["Failed", "Succeeded"], pod_report(core)     # the killed pod, then the resume

                azure.delay = 0
                served = azure.bytes_served()
                started = time.monotonic()
                net.call(platform.deploy, "qwen-cached-2", {"catalog": {"name": ALIAS}}, namespace=NS)
                with deleted_after(net, platform, "qwen-cached-2"):
                    status = wait_state(node, core, net, platform, "qwen-cached-2", "Running", 300)
                    NUMBERS["model cache: the same azureml model, second deployment create -> Running (s)"] = \
                        round(time.monotonic() - started, 1)
                    assert azure.bytes_served() == served                    # nothing downloaded again
                    endpoint = expose(core, net, NS, status["internalEndpoint"])
                    platform._ca = platform.ca_path()
                    key = net.call(platform.keys, "qwen-cached-2", NS)[0]
                    pieces = net.call(stream_chat, platform, endpoint, key, ALIAS)
                    assert len(pieces) > 1 and "".join(pieces).strip(), pieces
            wait_for(node, lambda: not store_models(node, f"{NAME}:{VERSION}"), 180,
                     "the StoreModel garbage-collected")
        finally:
            azure.delay = 0
            upgrade_operator(node, core, azure.values)
