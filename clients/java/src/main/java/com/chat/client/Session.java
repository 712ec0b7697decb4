package com.chat.client;

import com.chat.v1.AuthServiceGrpc;
import com.chat.v1.GroupServiceGrpc;
import com.chat.v1.MessageServiceGrpc;
import com.chat.v1.RegisterRequest;
import com.chat.v1.RegisterResponse;
import com.chat.v1.StreamServiceGrpc;
import com.chat.v1.User;
import io.grpc.ClientInterceptor;
import io.grpc.ManagedChannel;
import java.util.concurrent.TimeUnit;

/**
 * Session is one signed-in user on a shared channel: its stubs carry the user's access token. Each unary stub
 * returned here has a fresh deadline (a grpc-java deadline is absolute once set on a stub).
 */
final class Session {
  /** CALL_DEADLINE_SECONDS bounds each unary call, so a hung server fails the check instead of hanging it. */
  static final long CALL_DEADLINE_SECONDS = 30;

  final User user;
  private final ManagedChannel channel;
  private final ClientInterceptor auth;

  private Session(ManagedChannel channel, User user, String accessToken) {
    this.channel = channel;
    this.user = user;
    this.auth = Channels.bearer(accessToken);
  }

  /** register creates an account with AuthService/Register (no token needed) and returns its session. */
  static Session register(ManagedChannel channel, String username, String password) {
    RegisterResponse res = AuthServiceGrpc.newBlockingStub(channel)
        .withDeadlineAfter(CALL_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .register(RegisterRequest.newBuilder().setUsername(username).setPassword(password).build());
    return new Session(channel, res.getUser(), res.getTokens().getAccessToken());
  }

  /** groups is a GroupService stub as this user. */
  GroupServiceGrpc.GroupServiceBlockingStub groups() {
    return GroupServiceGrpc.newBlockingStub(channel).withInterceptors(auth)
        .withDeadlineAfter(CALL_DEADLINE_SECONDS, TimeUnit.SECONDS);
  }

  /** messages is a MessageService stub as this user. */
  MessageServiceGrpc.MessageServiceBlockingStub messages() {
    return MessageServiceGrpc.newBlockingStub(channel).withInterceptors(auth)
        .withDeadlineAfter(CALL_DEADLINE_SECONDS, TimeUnit.SECONDS);
  }

  /** streams is an async StreamService stub as this user, without a deadline (streams are long-lived). */
  StreamServiceGrpc.StreamServiceStub streams() {
    return StreamServiceGrpc.newStub(channel).withInterceptors(auth);
  }
}
