using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;
using Duality.Persistence;

namespace Duality.Interop;

/// <summary>A tensor of a pickled state_dict: where its values lie in a storage, before any value is read.</summary>
internal sealed record PickledTensor(PickledStorage Storage, long Offset, long[] Shape, long[] Stride);

/// <summary>A storage named by a persistent id ("storage", torch.XStorage, key, location, numel): a file of the archive.</summary>
internal sealed record PickledStorage(string StorageType, string Key, long Count);

/// <summary>A pickled dict or OrderedDict: its items in the order they were set.</summary>
internal sealed class PickledDict
{
    public List<KeyValuePair<object?, object?>> Items { get; } = [];
}

/// <summary>
/// Reads the pickle of a <c>torch.save</c> archive (data.pkl) the way <c>torch.load(path, weights_only=True)</c> does:
/// it is an interpreter of the pickle opcodes that builds dicts, lists, tuples, numbers, strings and tensor
/// descriptions, and knows the globals of <see cref="Allowed"/> and no others. Every other global (os.system,
/// builtins.eval, subprocess.Popen, a model's class, ...) is refused when its opcode (GLOBAL, STACK_GLOBAL, INST) is
/// read, and so are the opcodes that build objects by other means (OBJ, INST, EXT1/2/4, NEWOBJ_EX, buffers).
/// Nothing in the file is ever executed: no .NET type is looked up by a name in the file, no constructor is called
/// by one, and a refusal is a <see cref="GraphFileException"/> naming the global or opcode and its byte offset.
/// </summary>
internal static class RestrictedUnpickler
{
    /// <summary>The globals a weights file may name, as torch.load(weights_only=True) allows them.</summary>
    public static readonly IReadOnlySet<string> Allowed = new HashSet<string>(
    [
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        .. new[] { "Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool", "ComplexDouble", "ComplexFloat" }
            .Select(t => $"torch.{t}Storage"),
    ]);

    private sealed record Global(string Name);

    private sealed class Mark
    {
        public static readonly Mark Instance = new();
    }

    /// <summary>The object the pickle builds; a persistent id becomes a <see cref="PickledStorage"/>, read by the caller from the archive.</summary>
    public static object? Load(byte[] pickle, string path, string entry)
    {
        GraphFileException Refused(string problem, int at, string? hint = null) =>
            new(path, $"{entry}, byte {at}: {problem}",
                hint ?? "the file is damaged or not a state_dict written by torch.save(model.state_dict(), path)");
        GraphFileException Hostile(string global, int at) =>
            new(path, $"{entry}, byte {at}: the pickle names the global '{global}', which a weights file never holds; only tensors, "
                + "storages, OrderedDict, dicts, lists, tuples, numbers and strings are read (as torch.load(path, weights_only=True) reads them), "
                + "and nothing in the file was run",
                "do not load this file in Python without weights_only=True: it may run code; ask for a state_dict saved with "
                + "torch.save(model.state_dict(), path), or a .safetensors file");

        var stack = new List<object?>();
        var marks = new Stack<int>();
        var memo = new Dictionary<long, object?>();
        int position = 0;

        int opcodeAt = 0;
        ReadOnlySpan<byte> Take(long count)
        {
            if (count < 0 || count > pickle.Length - position)
                throw Refused($"the opcode needs {count} bytes but the pickle ends after {pickle.Length - position}", opcodeAt);
            var span = pickle.AsSpan(position, (int)count);
            position += (int)count;
            return span;
        }
        string Line()
        {
            var end = Array.IndexOf(pickle, (byte)'\n', position);
            if (end < 0) throw Refused("a line argument has no end", opcodeAt);
            var text = Encoding.Latin1.GetString(pickle, position, end - position);
            position = end + 1;
            return text;
        }
        object? Pop()
        {
            if (stack.Count == 0 || marks.Count > 0 && stack.Count == marks.Peek())
                throw Refused("an opcode pops from an empty stack", opcodeAt);
            var top = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            return top;
        }
        object? Top() => stack.Count > 0 ? stack[^1] : throw Refused("an opcode reads an empty stack", opcodeAt);
        List<object?> PopMark()
        {
            if (marks.Count == 0) throw Refused("an opcode needs a MARK and there is none", opcodeAt);
            var at = marks.Pop();
            var items = stack.GetRange(at, stack.Count - at);
            stack.RemoveRange(at, stack.Count - at);
            return items;
        }
        void Push(object? value) => stack.Add(value);
        object? Get(long key) => memo.TryGetValue(key, out var v) ? v : throw Refused($"the memo has no entry {key}", opcodeAt);
        void Put(long key) => memo[key] = Top();
        void SetItems(object? target, IReadOnlyList<object?> pairs)
        {
            if (target is not PickledDict dict) throw Refused($"SETITEM(S) on {Show(target)}, not a dict", opcodeAt);
            if (pairs.Count % 2 != 0) throw Refused("SETITEMS with an odd number of items", opcodeAt);
            for (int i = 0; i < pairs.Count; i += 2)
            {
                var key = pairs[i];
                if (key is not (string or long or BigInteger or bool or null))
                    throw Refused($"a dict key is {Show(key)}, not a string or a number", opcodeAt);
                var existing = dict.Items.FindIndex(p => Equals(p.Key, key));
                if (existing >= 0) dict.Items[existing] = new(key, pairs[i + 1]);
                else dict.Items.Add(new(key, pairs[i + 1]));
            }
        }
        void Append(object? target, IReadOnlyList<object?> items)
        {
            if (target is not List<object?> list) throw Refused($"APPEND(S) on {Show(target)}, not a list", opcodeAt);
            list.AddRange(items);
        }
        object? Global(string module, string name)
        {
            var full = $"{module}.{name}";
            // storage types of dtypes newer than this list (torch.Float8_e4m3fnStorage, ...) are storages too; reading one is refused by its dtype
            var storageType = module == "torch" && name.EndsWith("Storage", StringComparison.Ordinal) && name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_');
            if (!Allowed.Contains(full) && !storageType) throw Hostile(full, opcodeAt);
            return new Global(full);
        }
        long Integer(object? value, string what) => value switch
        {
            long l => l,
            bool b => b ? 1 : 0,
            _ => throw Refused($"{what} is {Show(value)}, not an integer", opcodeAt),
        };
        long[] Integers(object? value, string what) =>
            value is object?[] tuple ? tuple.Select(v => Integer(v, what)).ToArray()
            : value is List<object?> list ? list.Select(v => Integer(v, what)).ToArray()
            : throw Refused($"{what} is {Show(value)}, not a tuple of integers", opcodeAt);
        object? Call(object? callable, object?[] args)
        {
            switch (callable)
            {
                case Global { Name: "collections.OrderedDict" }:
                    if (args.Length > 1 || args.Length == 1 && !(args[0] is object?[] { Length: 0 } || args[0] is List<object?> { Count: 0 }))
                        throw Refused("OrderedDict is called with items; a state_dict's OrderedDict is built empty, then filled", opcodeAt);
                    return new PickledDict();
                case Global { Name: "torch._utils._rebuild_tensor_v2" }:
                    if (args.Length is < 6 or > 7) throw Refused($"_rebuild_tensor_v2 takes 6 or 7 arguments, not {args.Length}", opcodeAt);
                    if (args[0] is not PickledStorage storage) throw Refused($"_rebuild_tensor_v2 is given {Show(args[0])}, not a storage", opcodeAt);
                    var shape = Integers(args[2], "a tensor's size");
                    var stride = Integers(args[3], "a tensor's stride");
                    if (shape.Length != stride.Length) throw Refused($"a tensor has {shape.Length} sizes and {stride.Length} strides", opcodeAt);
                    return new PickledTensor(storage, Integer(args[1], "a tensor's storage offset"), shape, stride);
                case Global { Name: "torch._utils._rebuild_parameter" }:
                    if (args.Length != 3 || args[0] is not PickledTensor parameter)
                        throw Refused("_rebuild_parameter is not given (tensor, requires_grad, backward_hooks)", opcodeAt);
                    return parameter;
                case Global g:
                    throw Refused($"the pickle calls '{g.Name}', which is not a function", opcodeAt);
                default:
                    throw Refused($"the pickle calls {Show(callable)}, which is not a function", opcodeAt);
            }
        }

        while (true)
        {
            if (position >= pickle.Length) throw Refused("the pickle ends without a STOP opcode", position);
            opcodeAt = position;
            var op = pickle[position++];
            switch (op)
            {
                case 0x80: Take(1); break;                                                         // PROTO
                case 0x95: Take(8); break;                                                         // FRAME
                case (byte)'.':                                                                    // STOP
                    if (stack.Count != 1 || marks.Count != 0) throw Refused($"the pickle stops with {stack.Count} values on its stack", opcodeAt);
                    return stack[0];
                case (byte)'(': marks.Push(stack.Count); break;                                    // MARK
                case (byte)'0': Pop(); break;                                                      // POP
                case (byte)'1': PopMark(); break;                                                  // POP_MARK
                case (byte)'2': Push(Top()); break;                                                // DUP
                case (byte)'N': Push(null); break;                                                 // NONE
                case 0x88: Push(true); break;                                                      // NEWTRUE
                case 0x89: Push(false); break;                                                     // NEWFALSE
                case (byte)'I':                                                                    // INT
                {
                    var text = Line();
                    Push(text switch
                    {
                        "01" => true,
                        "00" => false,
                        _ => long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v
                            : throw Refused($"INT '{text}' is not an integer", opcodeAt),
                    });
                    break;
                }
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break; // BININT
                case (byte)'K': Push((long)Take(1)[0]); break;                                     // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
                case (byte)'L':                                                                    // LONG
                {
                    var text = Line().TrimEnd('L');
                    Push(BigInteger.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? Narrow(v)
                        : throw Refused($"LONG '{text}' is not an integer", opcodeAt));
                    break;
                }
                case 0x8a: Push(Narrow(new BigInteger(Take(Take(1)[0]), isUnsigned: false, isBigEndian: false))); break; // LONG1
                case 0x8b:                                                                         // LONG4
                {
                    var n = BinaryPrimitives.ReadInt32LittleEndian(Take(4));
                    if (n > 64) throw Refused($"a LONG4 integer of {n} bytes", opcodeAt);
                    Push(Narrow(new BigInteger(Take(n), isUnsigned: false, isBigEndian: false)));
                    break;
                }
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break;       // BINFLOAT
                case (byte)'F':                                                                    // FLOAT
                {
                    var text = Line();
                    Push(double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v
                        : throw Refused($"FLOAT '{text}' is not a number", opcodeAt));
                    break;
                }
                case (byte)'X': Push(Utf8(Take(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))))); break; // BINUNICODE
                case 0x8c: Push(Utf8(Take(Take(1)[0]))); break;                                    // SHORT_BINUNICODE
                case 0x8d: Push(Utf8(Take(Length8(Take(8))))); break;                               // BINUNICODE8
                case (byte)'V': Push(Line()); break;                                               // UNICODE (raw-unicode-escape; ASCII names)
                case (byte)'T': Push(Encoding.Latin1.GetString(Take(BinaryPrimitives.ReadInt32LittleEndian(Take(4))))); break; // BINSTRING
                case (byte)'U': Push(Encoding.Latin1.GetString(Take(Take(1)[0]))); break;           // SHORT_BINSTRING
                case (byte)'S':                                                                    // STRING
                {
                    var text = Line();
                    if (text.Length < 2 || text[0] != text[^1] || text[0] is not ('\'' or '"'))
                        throw Refused($"STRING {text} is not quoted", opcodeAt);
                    Push(text[1..^1]);
                    break;
                }
                case (byte)'B': Push(Take(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))).ToArray()); break; // BINBYTES
                case (byte)'C': Push(Take(Take(1)[0]).ToArray()); break;                           // SHORT_BINBYTES
                case 0x8e: Push(Take(Length8(Take(8))).ToArray()); break;                           // BINBYTES8
                case (byte)')': Push(Array.Empty<object?>()); break;                               // EMPTY_TUPLE
                case (byte)'t': Push(PopMark().ToArray()); break;                                  // TUPLE
                case 0x85: { var a = Pop(); Push(new[] { a }); break; }                            // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }          // TUPLE2
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; } // TUPLE3
                case (byte)']': Push(new List<object?>()); break;                                  // EMPTY_LIST
                case (byte)'l': Push(PopMark()); break;                                            // LIST
                case (byte)'a': { var item = Pop(); Append(Top(), [item]); break; }                // APPEND
                case (byte)'e': { var items = PopMark(); Append(Top(), items); break; }            // APPENDS
                case (byte)'}': Push(new PickledDict()); break;                                    // EMPTY_DICT
                case (byte)'d': { var items = PopMark(); var dict = new PickledDict(); SetItems(dict, items); Push(dict); break; } // DICT
                case (byte)'s': { var value = Pop(); var key = Pop(); SetItems(Top(), [key, value]); break; } // SETITEM
                case (byte)'u': { var items = PopMark(); SetItems(Top(), items); break; }          // SETITEMS
                case (byte)'p': Put(MemoKey(Line())); break;                                       // PUT
                case (byte)'q': Put(Take(1)[0]); break;                                            // BINPUT
                case (byte)'r': Put(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))); break;      // LONG_BINPUT
                case 0x94: Put(memo.Count); break;                                                 // MEMOIZE
                case (byte)'g': Push(Get(MemoKey(Line()))); break;                                 // GET
                case (byte)'h': Push(Get(Take(1)[0])); break;                                      // BINGET
                case (byte)'j': Push(Get(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // LONG_BINGET
                case (byte)'c':                                                                    // GLOBAL
                {
                    var module = Line();
                    Push(Global(module, Line()));
                    break;
                }
                case 0x93:                                                                         // STACK_GLOBAL
                {
                    var name = Pop();
                    var module = Pop();
                    if (module is not string m || name is not string n)
                        throw Refused($"STACK_GLOBAL names {Show(module)}.{Show(name)}, not two strings", opcodeAt);
                    Push(Global(m, n));
                    break;
                }
                case (byte)'R':                                                                    // REDUCE
                {
                    var args = Pop();
                    var callable = Pop();
                    if (args is not object?[] tuple) throw Refused($"REDUCE is given {Show(args)} for arguments, not a tuple", opcodeAt);
                    Push(Call(callable, tuple));
                    break;
                }
                case 0x81:                                                                         // NEWOBJ: cls.__new__(cls, *args)
                {
                    var args = Pop();
                    var type = Pop();
                    if (type is not Global { Name: "collections.OrderedDict" } || args is not object?[] { Length: 0 })
                        throw Refused($"NEWOBJ builds {Show(type)}; only an empty OrderedDict is built this way", opcodeAt);
                    Push(new PickledDict());
                    break;
                }
                case (byte)'b':                                                                    // BUILD
                {
                    var state = Pop();
                    // an OrderedDict's state: its attributes (a state_dict's _metadata); they hold no weights
                    if (Top() is not PickledDict || state is not (PickledDict or null))
                        throw Refused($"BUILD sets the state of {Show(Top())} to {Show(state)}; only an OrderedDict's attributes are read", opcodeAt);
                    break;
                }
                case (byte)'Q':                                                                    // BINPERSID
                {
                    var id = Pop();
                    if (id is not object?[] { Length: 5 } pid || pid[0] is not "storage" || pid[1] is not Global storageType
                        || pid[2] is not string key)
                        throw Refused($"a persistent id is {Show(id)}, not ('storage', torch.XStorage, key, location, size)", opcodeAt);
                    Push(new PickledStorage(storageType.Name["torch.".Length..], key, Integer(pid[4], "a storage's size")));
                    break;
                }
                case (byte)'i':                                                                    // INST: a class named inline, then called
                {
                    var module = Line();
                    throw Hostile($"{module}.{Line()}", opcodeAt);
                }
                case (byte)'o': throw Refused("the opcode OBJ builds an object of a class", opcodeAt, NotWeights);
                case 0x82 or 0x83 or 0x84: throw Refused("an EXT opcode names a global through the extension registry", opcodeAt, NotWeights);
                case 0x92: throw Refused("the opcode NEWOBJ_EX builds an object of a class", opcodeAt, NotWeights);
                case (byte)'P': throw Refused("a text persistent id (PERSID); torch.save writes binary ones", opcodeAt);
                default:
                    throw Refused($"the opcode 0x{op:x2} is not read in a weights file", opcodeAt, NotWeights);
            }
        }
    }

    private const string NotWeights =
        "this is not a state_dict of tensors; save one with torch.save(model.state_dict(), path), or write a .safetensors file";

    private static object Narrow(BigInteger value) => value >= long.MinValue && value <= long.MaxValue ? (long)value : value;

    private static long Length8(ReadOnlySpan<byte> bytes) => (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(bytes), long.MaxValue);

    private static long MemoKey(string text) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var key) ? key : -1;

    private static string Utf8(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);

    /// <summary>A value of the pickle, shortly, for messages.</summary>
    internal static string Show(object? value) => value switch
    {
        null => "None",
        string s => s.Length <= 40 ? $"'{s}'" : $"'{s[..37]}...'",
        long or BigInteger or double or bool => Convert.ToString(value, CultureInfo.InvariantCulture)!,
        object?[] t => $"a tuple of {t.Length}",
        List<object?> l => $"a list of {l.Count}",
        PickledDict d => $"a dict of {d.Items.Count}",
        PickledTensor => "a tensor",
        PickledStorage => "a storage",
        Global g => $"'{g.Name}'",
        byte[] b => $"{b.Length} bytes",
        _ => value.GetType().Name,
    };
}
