"""What a model costs: resources of its training steps (:mod:`.usage`), and the report behind
``mlplatform cost`` (:mod:`.report`): training, bytes stored, serving requests and CPU, and money
when prices are configured."""
