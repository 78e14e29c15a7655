from mlplatform_assets.lib.serving.server import main

main()
