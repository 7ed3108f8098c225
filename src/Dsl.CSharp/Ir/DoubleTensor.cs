namespace Duality.Ir;

/// <summary>Concrete float64 values with an explicit shape, stored row-major.</summary>
public sealed record DoubleTensor
{
    public DoubleTensor(ValueList<int> shape, ValueList<double> data)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(data);
        if (shape.Any(d => d < 0))
            throw new ArgumentException($"tensor dimensions must be non-negative, got {shape}");
        var size = shape.Aggregate(1L, (a, d) => a * d);
        if (size != data.Count)
            throw new ArgumentException($"tensor of shape {shape} needs {size} values, got {data.Count}");
        Shape = shape;
        Data = data;
    }

    public ValueList<int> Shape { get; }

    public ValueList<double> Data { get; }

    public int Rank => Shape.Count;

    public double this[int i] => Data[i];

    public double this[int row, int column] => Data[row * Shape[1] + column];

    public bool IsFinite
    {
        get
        {
            for (int i = 0; i < Data.Count; i++)
                if (!double.IsFinite(Data[i])) return false;
            return true;
        }
    }

    public static DoubleTensor Vector(params double[] values) => new(ValueList.Of(values.Length), values);

    public static DoubleTensor Matrix(double[,] values)
    {
        int rows = values.GetLength(0), columns = values.GetLength(1);
        var data = new double[rows * columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                data[r * columns + c] = values[r, c];
        return new DoubleTensor(ValueList.Of(rows, columns), data);
    }

    public static DoubleTensor FromShape(int[] shape, double[] data) => new(shape, data);

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    public override string ToString() => $"DoubleTensor{ShapeText}";
}
