"""Response shapes of the control plane, as marshmallow schemas for /openapi.json (requests: validation.py)."""
from marshmallow import EXCLUDE, Schema, fields

from . import validation


class Out(Schema):
    """Responses may grow fields; documenting them as closed would make additions breaking."""

    class Meta:
        unknown = EXCLUDE


class ErrorItem(Out):
    field = fields.String(required=True)
    message = fields.String(required=True)


class ErrorDetails(Out):
    errors = fields.List(fields.Nested(ErrorItem))
    code = fields.String()


class ErrorEnvelope(Out):
    error = fields.String(required=True, metadata={"description": "NotFound, Conflict, ValidationError, "
                                                                  "AuthenticationDisabled, InternalError, ..."})
    message = fields.String(required=True)
    details = fields.Nested(ErrorDetails, required=True)


class Health(Out):
    status = fields.String(required=True)


class Ready(Out):
    status = fields.String(required=True)
    kubernetes = fields.String(required=True)
    error = fields.String()


class ResolvedModel(Out):
    name = fields.String(allow_none=True)
    variant = fields.String(allow_none=True)
    image = fields.String(allow_none=True)
    workloadType = fields.String(allow_none=True, metadata={  # noqa: N815
        "enum": ["generative", "predictive", None], "description": "the workload type that runs"})
    runtime = fields.String(allow_none=True, metadata={
        "enum": ["onnx-genai", "onnxruntime", "vllm", None], "description": "the engine that runs the model"})
    port = fields.Integer(allow_none=True, metadata={"description": "the model server's container port"})


class Condition(Out):
    type = fields.String(required=True)
    status = fields.String(required=True)
    reason = fields.String(allow_none=True)
    message = fields.String(allow_none=True)
    lastTransitionTime = fields.String(allow_none=True)  # noqa: N815
    observedGeneration = fields.Integer(allow_none=True)  # noqa: N815


class ScalingDecision(Out):
    replicas = fields.Integer(allow_none=True)
    reason = fields.String(allow_none=True)
    time = fields.String(allow_none=True)


class WorkloadStatus(Out):
    state = fields.String(required=True, allow_none=True, metadata={"enum": [
        "Pending", "Creating", "Running", "ScaledToZero", "Updating", "Error", "Terminating", None]})
    message = fields.String(required=True, allow_none=True)
    replicas = fields.Integer(required=True, allow_none=True, metadata={"description": "replicas that exist now"})
    desiredReplicas = fields.Integer(required=True, allow_none=True, metadata={  # noqa: N815
        "description": "spec.replicas, or the autoscaler's last decision"})
    lastScaling = fields.Nested(ScalingDecision, required=True, allow_none=True)  # noqa: N815
    readyReplicas = fields.Integer(required=True, allow_none=True)  # noqa: N815
    deploymentReady = fields.Boolean(required=True, allow_none=True)  # noqa: N815
    serviceReady = fields.Boolean(required=True, allow_none=True)  # noqa: N815
    internalEndpoint = fields.String(required=True, allow_none=True)  # noqa: N815
    externalEndpoint = fields.String(required=True, allow_none=True)  # noqa: N815
    resolvedModel = fields.Nested(ResolvedModel, required=True, allow_none=True)  # noqa: N815
    authentication = fields.Dict(required=True, allow_none=True)
    observedGeneration = fields.Integer(required=True, allow_none=True)  # noqa: N815
    conditions = fields.List(fields.Nested(Condition), required=True)


class Deployment(Out):
    name = fields.String(required=True)
    namespace = fields.String(required=True)
    spec = fields.Nested(validation.DeploymentSpecSchema, required=True)
    status = fields.Nested(WorkloadStatus, required=True)


class DeploymentList(Out):
    deployments = fields.List(fields.Nested(Deployment), required=True)
    continueToken = fields.String(required=True, allow_none=True)  # noqa: N815


class InferenceService(Out):
    name = fields.String(required=True)
    namespace = fields.String(required=True)
    spec = fields.Nested(validation.InferenceServiceSpecSchema, required=True)
    status = fields.Nested(WorkloadStatus, required=True)


class InferenceServiceList(Out):
    inferenceServices = fields.List(fields.Nested(InferenceService), required=True)  # noqa: N815
    continueToken = fields.String(required=True, allow_none=True)  # noqa: N815


class Deleting(Out):
    status = fields.String(required=True)
    name = fields.String(required=True)
    namespace = fields.String(required=True)


class KeyValue(Out):
    value = fields.String(required=True, allow_none=True)
    createdAt = fields.String(required=True, allow_none=True)  # noqa: N815


class Keys(Out):
    deploymentName = fields.String(required=True)  # noqa: N815
    namespace = fields.String(required=True)
    primaryKey = fields.Nested(KeyValue, required=True)  # noqa: N815
    secondaryKey = fields.Nested(KeyValue, required=True)  # noqa: N815


class RotatedKey(Out):
    deploymentName = fields.String(required=True)  # noqa: N815
    namespace = fields.String(required=True)
    keyType = fields.String(required=True)  # noqa: N815
    key = fields.Nested(KeyValue, required=True)


class ModelSummary(Out):
    id = fields.String(required=True)
    alias = fields.String(required=True, allow_none=True)
    displayName = fields.String(required=True, allow_none=True)  # noqa: N815
    publisher = fields.String(required=True, allow_none=True)
    description = fields.String(required=True, allow_none=True)
    license = fields.String(required=True, allow_none=True)
    task = fields.String(required=True, allow_none=True)
    source = fields.String(required=True, allow_none=True)
    framework = fields.String(required=True, allow_none=True)
    modelVersion = fields.String(required=True, allow_none=True)  # noqa: N815
    supportedCompute = fields.List(fields.String(), required=True, allow_none=True)  # noqa: N815


class ModelDetail(ModelSummary):
    variants = fields.List(fields.Dict())
    contextLength = fields.Integer(allow_none=True)  # noqa: N815


class ModelList(Out):
    models = fields.List(fields.Nested(ModelSummary), required=True)
    total = fields.Integer(required=True)
    count = fields.Integer(required=True)
    hasMore = fields.Boolean(required=True)  # noqa: N815
    limit = fields.Integer(required=True, allow_none=True)
    offset = fields.Integer(required=True, allow_none=True)
    unfilteredTotal = fields.Integer(required=True)  # noqa: N815
    version = fields.String(required=True, allow_none=True)
    lastSync = fields.String(required=True, allow_none=True)  # noqa: N815


class SyncTriggered(Out):
    status = fields.String(required=True)
    message = fields.String(required=True)
    syncedAt = fields.String(required=True)  # noqa: N815


class CustomModelDetail(ModelSummary):
    name = fields.String(required=True)
    namespace = fields.String(required=True)
    spec = fields.Dict(required=True)
    status = fields.Dict(required=True)
    createdAt = fields.String(allow_none=True)  # noqa: N815
