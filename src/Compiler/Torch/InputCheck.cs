using Duality.Ir;
using static TorchSharp.torch;

namespace Duality.Torch;

/// <summary>
/// The runtime boundary: tensors handed to a compiled graph are checked once, with readable errors. Empty sequences
/// (batch 0 or time 0) pass: every form returns empty outputs [batch, 0, features'] or [0, time, features'].
/// </summary>
internal static class InputCheck
{
    public static void Sequences(Graph graph, Tensor[] inputs, ScalarType dtype, Device device) =>
        Check(graph, inputs, dtype, device, rank: 3, batch: null, "[batch, time, {0}]");

    public static void Steps(Graph graph, Tensor[] inputs, ScalarType dtype, Device device, long batch) =>
        Check(graph, inputs, dtype, device, rank: 2, batch, "[batch, {0}]");

    private static void Check(Graph graph, Tensor[] inputs, ScalarType dtype, Device device, int rank, long? batch, string layout)
    {
        var declared = graph.InputNodes.ToArray();
        if (inputs is null)
            throw new GraphException(new Diagnostic("missing input", "(graph)", $"{declared.Length} inputs",
                $"pass one tensor for each of: {string.Join(", ", declared.Select(d => d.Name))}", Received: "null"));
        if (inputs.Length != declared.Length)
            throw new GraphException(new Diagnostic("wrong number of inputs", "(graph)", $"{declared.Length} inputs",
                $"pass one tensor for each of: {string.Join(", ", declared.Select(d => d.Name))}",
                Received: $"{inputs.Length} tensors"));
        var problems = new List<Diagnostic>();
        long? seenBatch = batch, seenTime = null;
        for (int i = 0; i < inputs.Length; i++)
        {
            var (x, input) = (inputs[i], declared[i]);
            var expected = string.Format(layout, input.Features);
            if (x is null || x.IsInvalid)
            {
                problems.Add(new Diagnostic("missing input", input.Name, input.Describe(), "pass a live tensor", expected, "null or disposed"));
                continue;
            }
            var shape = "[" + string.Join(", ", x.shape) + "]";
            if (x.dim() != rank || x.shape[^1] != input.Features)
                problems.Add(new Diagnostic("input shape mismatch", input.Name, input.Describe(),
                    rank == 3 ? "reshape the input to [batch, time, features]" : "pass one time step [batch, features]",
                    expected, shape));
            else if (seenBatch is { } b && x.shape[0] != b)
                problems.Add(new Diagnostic("batch mismatch", input.Name, input.Describe(),
                    batch is null ? "give all inputs the same batch size" : "start a new state for a different batch size",
                    $"batch {b}", $"batch {x.shape[0]}"));
            else if (rank == 3 && seenTime is { } t && x.shape[1] != t)
                problems.Add(new Diagnostic("time mismatch", input.Name, input.Describe(), "give all inputs the same length",
                    $"time {t}", $"time {x.shape[1]}"));
            if (x.dtype != dtype)
                problems.Add(new Diagnostic("dtype mismatch", input.Name, input.Describe(),
                    $"convert with x.to_type(ScalarType.{dtype}), or compile with DType = {x.dtype}", dtype.ToString(), x.dtype.ToString()));
            if (x.device.type != device.type || (device.index >= 0 && x.device.index != device.index))
                problems.Add(new Diagnostic("device mismatch", input.Name, input.Describe(), $"move the input with x.to({device})",
                    device.ToString(), x.device.ToString()));
            if (x.dim() >= 1) seenBatch ??= x.shape[0];
            if (rank == 3 && x.dim() == 3) seenTime ??= x.shape[1];
        }
        if (problems.Count > 0) throw new GraphException(problems);
    }
}
