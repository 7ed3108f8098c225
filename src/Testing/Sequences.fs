/// Sequences double[batch, time, features], their tensors, and the error measures of the laws.
module Duality.Testing.Sequences

open System
open TorchSharp

/// A sequence batch in float64: [batch, time, features].
type Sequence = double[,,]

/// Deterministic input sequences [batch, time, features] in [-scale, scale].
let randomSequence (random: Random) batch time features scale : Sequence =
    Array3D.init batch time features (fun _ _ _ -> scale * (2.0 * random.NextDouble() - 1.0))

/// The tensor [batch, time, features] holding `x`, in `dtype` on the CPU.
let toTensor (dtype: torch.ScalarType) (x: Sequence) =
    let b, t, f = Array3D.length1 x, Array3D.length2 x, Array3D.length3 x
    let flat = Array.init (b * t * f) (fun i -> x.[i / (t * f), (i / f) % t, i % f])
    // intermediates held by a scope until the result is made: a temporary only the native call still reads could
    // otherwise be finalised (its native tensor freed) during that call
    use scope = torch.NewDisposeScope()
    scope.MoveToOuter(torch.from_array(flat).reshape(int64 b, int64 t, int64 f).to_type(dtype))

/// The values of a tensor of any shape as float64, in row-major order.
let ofTensorFlat (t: torch.Tensor) =
    let data = (use _ = torch.NewDisposeScope() in t.detach().to_type(torch.ScalarType.Float64).contiguous().data<double>().ToArray())
    GC.KeepAlive t
    data

/// The values of a tensor [batch, time, features] (any dtype or device) as float64.
let ofTensor (y: torch.Tensor) : Sequence =
    let shape = y.shape
    let data = ofTensorFlat y
    let b, t, f = int shape.[0], int shape.[1], int shape.[2]
    Array3D.init b t f (fun i j k -> data.[(i * t + j) * f + k])

/// max |x|, NaN if any entry is NaN.
let maxAbs (x: Sequence) =
    let mutable m = 0.0
    x |> Array3D.iter (fun v -> m <- if Double.IsNaN v || Double.IsNaN m then nan else max m (abs v))
    m

/// True when both sequences have the same batch, time and feature sizes.
let sameShape (a: Sequence) (b: Sequence) =
    Array3D.length1 a = Array3D.length1 b && Array3D.length2 a = Array3D.length2 b && Array3D.length3 a = Array3D.length3 b

let private maxDifference (expected: Sequence) (actual: Sequence) =
    let mutable m = 0.0
    expected |> Array3D.iteri (fun i j k e ->
        let d = abs (e - actual.[i, j, k])
        m <- if Double.IsNaN d then infinity else max m d)
    m

/// max |a - b| / (1 + max |a|); infinity on a shape mismatch or NaN.
let scaledError (expected: Sequence) (actual: Sequence) =
    if not (sameShape expected actual) then infinity else maxDifference expected actual / (1.0 + maxAbs expected)

/// max |a - b| / max |a|; infinity on a shape mismatch or NaN.
let relativeError (expected: Sequence) (actual: Sequence) =
    if not (sameShape expected actual) then infinity
    else
        let m, scale = maxDifference expected actual, maxAbs expected
        if scale = 0.0 then m else m / scale
