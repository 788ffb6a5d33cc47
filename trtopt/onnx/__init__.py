"""The ONNX layer: the one place that reads protobuf graphs, used by every stage.

* :mod:`~trtopt.onnx.io`: load with clear errors, verified atomic save, external data, model hash;
* :mod:`~trtopt.onnx.graph`: :class:`~trtopt.onnx.graph.GraphIndex` (producers, consumers, constants),
  element types, opset, unique names, ONNX node name -> PyTorch module path;
* :mod:`~trtopt.onnx.walk`: subgraphs (If/Loop/Scan bodies) and outer-scope reads;
* :mod:`~trtopt.onnx.constants`: every form of constant, constant-only chains;
* :mod:`~trtopt.onnx.dims`: dynamic, named and placeholder dims;
* :mod:`~trtopt.onnx.rewrite`: drop unused constants, rebuild the node list, raise the opset;
* :mod:`~trtopt.onnx.ops`: the op-type sets;
* :mod:`~trtopt.onnx.precision`: is a model quantized, does it hold Q/DQ, does it compute in FP16;
* :mod:`~trtopt.onnx.macs`: MACs of the weighted ops at given shapes and the share computed in INT8;
* :mod:`~trtopt.onnx.ort_probe`: crash-isolated ONNX Runtime load check of a written file.

Importing this package imports nothing; each module imports ``onnx`` itself.
"""
