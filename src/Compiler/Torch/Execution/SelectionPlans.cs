using Duality.Kernels;
using Duality.Structure;

namespace Duality.Execution;

/// <summary>A layer's <see cref="SelectionStructure"/> as the plan of the fused loop (<see cref="GatedLayerLoop"/>).</summary>
internal static class SelectionPlans
{
    public static GatedLayerLoop.Plan Of(SelectionStructure s) =>
        new(s.ValueRow, s.KeyRow, s.Lambda, s.Memory, s.Query, s.Coefficient, s.Group, s.Groups, s.LambdaImaginary, s.DecayRow);
}
