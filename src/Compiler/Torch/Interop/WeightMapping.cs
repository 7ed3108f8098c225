using System.Collections.Immutable;
using Duality.Ir;

namespace Duality.Interop;

/// <summary>Where a PyTorch tensor goes in a graph: the node's name (its path) and the name of one of its <see cref="Node.WeightSlots"/>.</summary>
/// <param name="Node">The node's name, such as "block1/proj".</param>
/// <param name="Slot">The weight slot's name, such as "Weight", "Bias", "Query" or "Lambda".</param>
public sealed record WeightTarget(string Node, string Slot)
{
    /// <summary>"node.slot", the name <see cref="PyTorchWeights.Save"/> gives the tensor without a mapping.</summary>
    public override string ToString() => $"{Node}.{Slot}";
}

/// <summary>
/// Names of PyTorch state_dict entries and the weight slots they fill: <c>"q_proj.weight"</c> -&gt;
/// (<c>"attn"</c>, <c>"Query"</c>). Immutable: every method returns a new mapping. Keys that a file holds but
/// the model does not use are listed with <see cref="Ignore"/>; any other key of a file that the mapping does not
/// name is refused when loading.
/// <para>
/// Layouts: every slot's shape is fixed by its node (<see cref="Node.WeightSlots"/>) and PyTorch tensors are taken
/// as they are, row-major, never transposed. <c>torch.nn.Linear</c> already stores its weight as [out, in] and its
/// bias as [out], which is <see cref="Projection"/>'s layout (W: [Out, In], b: [Out]), so <see cref="Linear"/> maps
/// without transposing. An <see cref="Attention"/>'s Query and Key are [Heads*KeyWidth, In], Value [Heads*ValueWidth, In]
/// and Output [Out, Heads*ValueWidth], head-major: exactly the weights of <c>nn.Linear(In, Heads*KeyWidth)</c> whose
/// output is viewed as [..., Heads, KeyWidth]. A recurrence's Lambda is [Width] (complex: [Width, 2] as re, im).
/// </para>
/// </summary>
public sealed class WeightMapping
{
    private WeightMapping(ImmutableDictionary<string, WeightTarget> targets, ImmutableHashSet<string> ignored)
    {
        Targets = targets;
        Ignored = ignored;
    }

    /// <summary>No keys mapped and none ignored.</summary>
    public static WeightMapping Empty { get; } = new(ImmutableDictionary<string, WeightTarget>.Empty, ImmutableHashSet<string>.Empty);

    /// <summary>Each PyTorch key and the slot it fills.</summary>
    public IReadOnlyDictionary<string, WeightTarget> Targets { get; }

    /// <summary>Keys a file may hold that are not loaded (buffers, parameters of layers the graph does not have).</summary>
    public IReadOnlySet<string> Ignored { get; }

    /// <summary>This mapping with <paramref name="key"/> filling the slot <paramref name="slot"/> of the node <paramref name="node"/>.</summary>
    /// <exception cref="ArgumentException">The key is already mapped or ignored, or another key already fills that slot.</exception>
    public WeightMapping Map(string key, string node, string slot)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(slot);
        if (Targets.TryGetValue(key, out var existing))
            throw new ArgumentException($"the PyTorch key '{key}' is already mapped to {existing}; map each key once", nameof(key));
        if (Ignored.Contains(key))
            throw new ArgumentException($"the PyTorch key '{key}' is ignored; a key is either mapped or ignored", nameof(key));
        var target = new WeightTarget(node, slot);
        if (Targets.FirstOrDefault(p => p.Value == target) is { Key: { } other })
            throw new ArgumentException($"the slot {target} is already filled by the PyTorch key '{other}'; each slot takes one key", nameof(slot));
        return new(((ImmutableDictionary<string, WeightTarget>)Targets).Add(key, target), (ImmutableHashSet<string>)Ignored);
    }

    /// <summary>
    /// The entries of a <c>torch.nn.Linear</c> named <paramref name="module"/> into the <see cref="Projection"/>
    /// <paramref name="node"/>: <c>module.weight</c> [out, in] -&gt; Weight [Out, In] and, with <paramref name="bias"/>,
    /// <c>module.bias</c> [out] -&gt; Bias [Out]. The layouts are the same, so nothing is transposed.
    /// </summary>
    /// <param name="module">The Linear's name in the state_dict, such as "encoder.proj" (keys "encoder.proj.weight", "encoder.proj.bias").</param>
    /// <param name="node">The projection's node name.</param>
    /// <param name="bias">Whether the Linear has a bias (<c>nn.Linear(..., bias=True)</c>, the default); the projection must match.</param>
    public WeightMapping Linear(string module, string node, bool bias = true)
    {
        ArgumentNullException.ThrowIfNull(module);
        var mapped = Map($"{module}.weight", node, "Weight");
        return bias ? mapped.Map($"{module}.bias", node, "Bias") : mapped;
    }

    /// <summary>This mapping with <paramref name="key"/> allowed in a file and not loaded.</summary>
    /// <exception cref="ArgumentException">The key is mapped.</exception>
    public WeightMapping Ignore(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (Targets.TryGetValue(key, out var existing))
            throw new ArgumentException($"the PyTorch key '{key}' is mapped to {existing}; a key is either mapped or ignored", nameof(key));
        return new((ImmutableDictionary<string, WeightTarget>)Targets, ((ImmutableHashSet<string>)Ignored).Add(key));
    }

    /// <summary>
    /// Every weight slot of <paramref name="graph"/> under the key "node.slot" ("block1/proj.Weight"): the names
    /// <see cref="PyTorchWeights.Save"/> writes when no mapping is given.
    /// </summary>
    public static WeightMapping ByNodeNames(Graph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var targets = ImmutableDictionary.CreateBuilder<string, WeightTarget>();
        foreach (var node in graph.Nodes)
            foreach (var slot in node.WeightSlots)
                targets.Add($"{node.Name}.{slot.Name}", new WeightTarget(node.Name, slot.Name));
        return new(targets.ToImmutable(), ImmutableHashSet<string>.Empty);
    }
}
