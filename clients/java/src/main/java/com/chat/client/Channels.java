package com.chat.client;

import io.grpc.ClientInterceptor;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.okhttp.OkHttpChannelBuilder;
import io.grpc.stub.MetadataUtils;
import java.net.URI;

/** Channels opens grpc-okhttp channels (the Android transport) and builds the bearer-token interceptor. */
final class Channels {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private Channels() {}

  /**
   * open returns a channel to the server at {@code url}: {@code http://host:port} speaks cleartext HTTP/2 with prior
   * knowledge (h2c, the server's plaintext port), {@code https://host[:port]} speaks HTTP/2 over TLS with the
   * platform's trust store. Anything else is an IllegalArgumentException naming the accepted forms.
   */
  static ManagedChannel open(String url) {
    URI uri = URI.create(url);
    String scheme = uri.getScheme();
    if (uri.getHost() == null || !("http".equals(scheme) || "https".equals(scheme))) {
      throw new IllegalArgumentException("server URL must look like http://127.0.0.1:8080 or https://chat.example.com, got " + url);
    }
    boolean tls = "https".equals(scheme);
    int port = uri.getPort() != -1 ? uri.getPort() : (tls ? 443 : 80);
    OkHttpChannelBuilder builder = OkHttpChannelBuilder.forAddress(uri.getHost(), port);
    if (tls) {
      builder.useTransportSecurity();
    } else {
      builder.usePlaintext();
    }
    return builder.build();
  }

  /** bearer returns an interceptor that sends {@code authorization: Bearer <token>} on every call of a stub. */
  static ClientInterceptor bearer(String token) {
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + token);
    return MetadataUtils.newAttachHeadersInterceptor(headers);
  }
}
