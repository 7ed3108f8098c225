namespace Duality.Ir;

/// <summary>Concrete float64 values with an explicit shape, stored row-major.</summary>
public sealed record DoubleTensor
{
    /// A tensor of <paramref name="shape"/> holding <paramref name="data"/> in row-major order (the last index varies fastest).
    /// <exception cref="ArgumentNullException"><paramref name="shape"/> or <paramref name="data"/> is null.</exception>
    /// <exception cref="ArgumentException">A dimension is negative, or <paramref name="data"/> does not hold exactly the product of the dimensions.</exception>
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

    /// The size of each dimension, outermost first (for a weight matrix [rows, columns] = [Out, In]).
    public ValueList<int> Shape { get; }

    /// The values in row-major order: element [i, j] of a matrix is <c>Data[i * Shape[1] + j]</c>.
    public ValueList<double> Data { get; }

    /// The number of dimensions: 1 for a vector, 2 for a matrix.
    public int Rank => Shape.Count;

    /// The <paramref name="i"/>-th value in row-major order (the element i of a vector).
    public double this[int i] => Data[i];

    /// The element at <paramref name="row"/>, <paramref name="column"/> of a matrix (rank 2); for other ranks the index is read as
    /// <c>row * Shape[1] + column</c>.
    public double this[int row, int column] => Data[row * Shape[1] + column];

    /// True when no value is NaN or infinite.
    public bool IsFinite
    {
        get
        {
            for (int i = 0; i < Data.Count; i++)
                if (!double.IsFinite(Data[i])) return false;
            return true;
        }
    }

    /// A rank-1 tensor [n] holding <paramref name="values"/>.
    public static DoubleTensor Vector(params double[] values) => new(ValueList.Of(values.Length), values);

    /// A rank-2 tensor [rows, columns] holding <paramref name="values"/>, copied row by row.
    public static DoubleTensor Matrix(double[,] values)
    {
        int rows = values.GetLength(0), columns = values.GetLength(1);
        var data = new double[rows * columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
                data[r * columns + c] = values[r, c];
        return new DoubleTensor(ValueList.Of(rows, columns), data);
    }

    /// A tensor of <paramref name="shape"/> holding <paramref name="data"/> in row-major order.
    /// <exception cref="ArgumentException">A dimension is negative, or the number of values does not match the shape.</exception>
    public static DoubleTensor FromShape(int[] shape, double[] data) => new(shape, data);

    /// The shape as shown in messages: "[4, 8]".
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// "DoubleTensor[4, 8]": the shape only, never the values.
    public override string ToString() => $"DoubleTensor{ShapeText}";
}
