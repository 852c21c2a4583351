"""Read a replay MCAP back in tests: the mcap reader plus protobuf classes built from the file's own schemas."""


def decoder(schema):
    """Protobuf message class for an MCAP schema record (a serialised FileDescriptorSet, as foxglove-sdk
    writes; this is what mcap-protobuf-support does)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    assert schema.encoding == "protobuf"
    fds = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))


def read_mcap(path):
    from mcap.reader import make_reader

    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        out = {}
        for schema, channel, message in reader.iter_messages():
            out.setdefault(channel.topic, []).append((schema, message, decoder(schema).FromString(message.data)))
    return summary, out
