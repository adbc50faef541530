"""The framework adapters: every private Keras, TensorFlow Lite and LiteRT-converter name edgecls reads lives here.

``keras_graph`` (a Keras model as a graph of layers), ``keras_io`` (``.keras`` files with edgecls
metadata inside), ``litert_converter`` (the converter's private entry points), ``tflite_graph``
(a ``.tflite`` file as tensors and ops). When a framework changes, this folder is where edgecls changes.
"""
