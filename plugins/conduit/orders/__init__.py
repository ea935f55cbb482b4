"""The order-fulfilment flow, the classic saga: inventory, fraud check, payment and shipping.

``model`` validates an order, ``steps`` holds each step's action and compensation (plain
functions over the order services' hooks), ``dag`` builds the per-order DAG from the
:class:`conduit.saga.Saga` building block.
"""
