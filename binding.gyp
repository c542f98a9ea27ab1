# node-gyp entry point, for tools that expect one. It delegates to the CMake build of record
# (CMakeLists.txt via scripts/build-native.js): one list of sources, one set of flags.
{
  "targets": [
    {
      "target_name": "torch_diffusion",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_js_build",
          "inputs": ["<(module_root_dir)/CMakeLists.txt"],
          "outputs": ["<(PRODUCT_DIR)/torch_diffusion.node"],
          "action": ["node", "<(module_root_dir)/scripts/build-native.js", "--copy-to", "<(PRODUCT_DIR)"]
        }
      ]
    }
  ]
}
