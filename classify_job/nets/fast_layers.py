"""Stock Keras layers rewritten as slices, products and reshapes that XLA on CPU runs faster.

- Depthwise and 1x1 convolutions: about 8x faster than the grouped/1x1 convolutions the stock
  layers lower to. They keep the stock layers' weight shapes and names (``kernel``, ``bias``), so
  weights move freely between them and ``keras.layers.DepthwiseConv2D`` / ``Conv2D``.
- 2x2 max-pooling as a reshape and a max: a training step of the Fashion-MNIST CNN took 0.91x
  the time of ``reduce_window`` pooling (AMD EPYC Zen 4, 25 interleaved pairs, faster in 23; 0.86x
  on an Intel Xeon).

The exported graphs swap each back to the stock layer (:mod:`classify_job.nets.graphs`), for
which every runtime has fused kernels. Channels-last only.
"""

from __future__ import annotations

import math

import keras
from keras import ops

PADDINGS = ("same", "valid")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one spatial axis: the extra pixel goes after, not before."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _output_size(size: int | None, kernel: int, stride: int, padding: str) -> int | None:
    if size is None:
        return None
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"`{name}` must be a positive int or a pair of them. Received: {name}={value}")
    return pair


@keras.saving.register_keras_serializable(package="classify_job")
class FastDepthwiseConv2D(keras.layers.Layer):
    """Depthwise 2D convolution (depth multiplier 1) as a sum of k*k shifted, strided slices.

    Same maths and kernel shape ``(kh, kw, channels, 1)`` as ``keras.layers.DepthwiseConv2D``;
    ``padding="same"`` is TensorFlow's asymmetric SAME.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: str = "same",
        use_bias: bool = False,
        depthwise_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if padding not in PADDINGS:
            raise ValueError(f"`padding` must be one of {PADDINGS}. Received: padding={padding!r}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = padding
        self.use_bias = use_bias
        self.depthwise_initializer = keras.initializers.get(depthwise_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, channels, 1), initializer=self.depthwise_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(channels,), initializer=self.bias_initializer)

    def call(self, inputs):
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        height, width = inputs.shape[1], inputs.shape[2]
        out_h = _output_size(height, kh, sh, self.padding)
        out_w = _output_size(width, kw, sw, self.padding)
        if self.padding == "same":
            pads = [(0, 0), same_padding(height, kh, sh), same_padding(width, kw, sw), (0, 0)]
            inputs = ops.pad(inputs, pads)
        kernel = ops.cast(self.kernel[..., 0], inputs.dtype)
        outputs = None
        for i in range(kh):
            for j in range(kw):
                # One tap: the input pixels it meets across the whole output grid, as a strided view.
                tap = inputs[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw, :]
                term = tap * kernel[i, j]
                outputs = term if outputs is None else outputs + term
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (
            batch,
            _output_size(height, kh, sh, self.padding),
            _output_size(width, kw, sw, self.padding),
            channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "use_bias": self.use_bias,
                "depthwise_initializer": keras.initializers.serialize(self.depthwise_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="classify_job")
class FastPointwiseConv2D(keras.layers.Layer):
    """1x1 convolution as one matrix product over the channel axis.

    Same maths and kernel shape ``(1, 1, in, out)`` as ``keras.layers.Conv2D(filters, 1)``.
    """

    def __init__(
        self,
        filters: int,
        use_bias: bool = False,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"`filters` must be a positive int. Received: filters={filters}")
        self.filters = filters
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(1, 1, input_shape[-1], self.filters), initializer=self.kernel_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def call(self, inputs):
        kernel = ops.cast(self.kernel[0, 0], inputs.dtype)
        outputs = ops.einsum("bhwc,cd->bhwd", inputs, kernel)
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="classify_job")
class FastMaxPool2D(keras.layers.Layer):
    """``keras.layers.MaxPooling2D(2)`` (2x2 window, stride 2, "valid": an odd last row or column
    is dropped) as a reshape into 2x2 blocks and a max over them, which XLA fuses with its
    neighbours; its gradient needs no select-and-scatter."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs):
        height, width, channels = inputs.shape[1] // 2, inputs.shape[2] // 2, inputs.shape[3]
        blocks = ops.reshape(inputs[:, : 2 * height, : 2 * width, :], (-1, height, 2, width, 2, channels))
        return ops.max(blocks, axis=(2, 4))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, *(None if size is None else size // 2 for size in (height, width)), channels)
