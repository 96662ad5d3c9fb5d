"""The peer role (GOCO gossip learning): :mod:`edgecode.peer.logic` holds its pure logic."""
