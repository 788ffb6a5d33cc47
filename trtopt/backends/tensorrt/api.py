"""The TensorRT API surface the backend uses, declared once (tests check it against the code and the bindings)."""

from __future__ import annotations

#: Every ``tensorrt`` attribute the backend touches, as ``trt.<name>``. ``common`` must exist in 10.x,
#: 11.x and TensorRT for RTX; ``rtx_only`` is used only on TensorRT for RTX; ``weak_typing_only`` is
#: used only when :attr:`~trtopt.backends.tensorrt.features.Features.weak_typing` (10.x); ``optional`` is
#: used only after a ``hasattr`` check. Instance attributes are spelled ``Class.attr`` and are
#: found in the sources through the variable names in :data:`INSTANCE_VARS`. The API-check test
#: compares this against the real bindings and against the sources, so it cannot drift.
USED_API: dict[str, tuple[str, ...]] = {
    "common": (
        "__version__", "Builder", "OnnxParser", "Runtime", "ILogger", "ILogger.__init__",
        "init_libnvinfer_plugins",
        "NetworkDefinitionCreationFlag", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
        "BuilderFlag", "BuilderFlag.TF32", "BuilderFlag.SPARSE_WEIGHTS", "BuilderFlag.VERSION_COMPATIBLE",
        "BuilderFlag.EXCLUDE_LEAN_RUNTIME", "BuilderFlag.GPU_FALLBACK",
        "MemoryPoolType.WORKSPACE", "ProfilingVerbosity", "ProfilingVerbosity.DETAILED",
        "ProfilingVerbosity.LAYER_NAMES_ONLY", "ProfilingVerbosity.NONE", "HardwareCompatibilityLevel",
        "HardwareCompatibilityLevel.NONE", "HardwareCompatibilityLevel.AMPERE_PLUS", "DeviceType.DLA",
        "LayerInformationFormat.JSON", "TensorIOMode.INPUT",
        "Builder.create_network", "Builder.create_builder_config", "Builder.create_optimization_profile",
        "Builder.build_serialized_network", "Builder.num_DLA_cores",
        "OnnxParser.parse", "OnnxParser.num_errors", "OnnxParser.get_error",
        "ParserError.code", "ParserError.desc", "ParserError.node", "ParserError.node_name",
        "ParserError.node_operator",
        "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.set_flag", "IBuilderConfig.clear_flag",
        "IBuilderConfig.builder_optimization_level", "IBuilderConfig.profiling_verbosity",
        "IBuilderConfig.hardware_compatibility_level", "IBuilderConfig.add_optimization_profile",
        "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",
        "IBuilderConfig.get_timing_cache", "IBuilderConfig.default_device_type", "IBuilderConfig.DLA_core",
        "IOptimizationProfile.set_shape", "ITimingCache.serialize",
        "Runtime.deserialize_cuda_engine", "Runtime.engine_host_code_allowed",
        "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
        "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_dtype", "ICudaEngine.create_execution_context",
        "ICudaEngine.create_engine_inspector", "EngineInspector.get_engine_information",
        "IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
        "IExecutionContext.get_tensor_shape", "IExecutionContext.execute_async_v3",
        "INetworkDefinition.num_inputs", "INetworkDefinition.num_outputs", "INetworkDefinition.get_input",
        "INetworkDefinition.get_output", "ITensor.name", "ITensor.dtype", "ITensor.shape",
    ),
    # TensorRT for RTX only; used only when Features.rtx (BuildPlan.rtx).
    "rtx_only": ("ComputeCapability", "IBuilderConfig.num_compute_capabilities",
                 "IBuilderConfig.set_compute_capability"),
    "weak_typing_only": (
        "BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
        "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile",
    ),
    "optional": ("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",),
}
#: Variable names the backend reserves for TensorRT objects (the API-check test maps them to classes).
INSTANCE_VARS: dict[str, str] = {
    "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser", "trt_config": "IBuilderConfig",
    "profile": "IOptimizationProfile", "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext",
    "inspector": "EngineInspector", "perr": "ParserError", "timing_cache": "ITimingCache", "tensor": "ITensor",
}
#: Functions allowed to use ``weak_typing_only`` names; every call to them sits under ``if ...weak_typing``.
WEAK_TYPING_FUNCTIONS = ("make_calibrator", "attach_calibrator")
