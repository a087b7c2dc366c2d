# Sourced by the scripts run on a lent GPU machine: puts libtorch, the CUDA runtime and NVRTC
# of the machine's pip torch ($python) on LD_LIBRARY_PATH for the carried Rust binaries.
torch_dir=$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))') || {
  echo "no torch in $python"
  return 1
}
"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
      "available", torch.cuda.is_available())'
site=$(dirname "$torch_dir")
libs=$torch_dir/lib
for d in "$site/nvidia/cu13/lib" "$site/nvidia/cuda_nvrtc/lib" "$site/nvidia/cuda_runtime/lib"; do
  [ -d "$d" ] && libs=$libs:$d
done
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
