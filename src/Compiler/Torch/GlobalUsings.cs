global using Parameter = TorchSharp.Modules.Parameter;
