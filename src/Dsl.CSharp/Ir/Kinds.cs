namespace Duality.Ir;

/// <summary>Elementwise nonlinearities; <c>Identity</c> means none. Softplus is log(1 + e^x).</summary>
public enum ActivationKind { Identity, Sigmoid, SiLU, GELU, Tanh, ReLU, EluPlusOne, Softplus }

/// <summary>A recurrence's state: real, or complex (kept as real and imaginary parts).</summary>
public enum StateKind { Real, Complex }

/// <summary>What a complex recurrence emits: its real part [width], or [re; im] [2 width].</summary>
public enum ComplexReadout { RealPart, RealAndImaginary }

/// <summary>Linear (no softmax, no normalisation) or scaled dot-product softmax attention.</summary>
public enum AttentionKernel { Linear, Softmax }
