package com.chat.client;

import com.chat.v1.StreamServiceGrpc;
import com.chat.v1.SubscribeRequest;
import com.chat.v1.SubscribeResponse;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Subscription is one open StreamService/Subscribe call read item by item. Items are kept in arrival order; the
 * end of the call (an error or a clean close) is kept after them, so next() reports it once the items before it are
 * read. Heartbeats are skipped: they carry no timeline data.
 */
final class Subscription implements AutoCloseable {
  /** ITEM_WAIT_SECONDS bounds the wait for one item: a liveness guard against a hung stream, not a speed check. */
  static final long ITEM_WAIT_SECONDS = 30;

  private static final Object CLEAN_END = new Object();

  private final BlockingQueue<Object> items = new LinkedBlockingQueue<>();
  private volatile ClientCallStreamObserver<SubscribeRequest> call;

  private Subscription() {}

  /** open starts the call; items arrive in the background until close(). */
  static Subscription open(StreamServiceGrpc.StreamServiceStub stub, SubscribeRequest request) {
    Subscription s = new Subscription();
    stub.subscribe(request, new ClientResponseObserver<SubscribeRequest, SubscribeResponse>() {
      @Override
      public void beforeStart(ClientCallStreamObserver<SubscribeRequest> requestStream) {
        s.call = requestStream;
      }

      @Override
      public void onNext(SubscribeResponse item) {
        s.items.add(item);
      }

      @Override
      public void onError(Throwable t) {
        s.items.add(t);
      }

      @Override
      public void onCompleted() {
        s.items.add(CLEAN_END);
      }
    });
    return s;
  }

  /**
   * next returns the next item that is not a heartbeat, or throws CheckFailed naming {@code waitingFor} if the stream
   * ended (with its status) or nothing came within ITEM_WAIT_SECONDS.
   */
  SubscribeResponse next(String waitingFor) throws InterruptedException {
    while (true) {
      Object item = items.poll(ITEM_WAIT_SECONDS, TimeUnit.SECONDS);
      if (item == null) {
        throw new CheckFailed("no stream item within " + ITEM_WAIT_SECONDS + " s while waiting for " + waitingFor);
      }
      if (item == CLEAN_END) {
        throw new CheckFailed("the stream ended (status OK) while waiting for " + waitingFor);
      }
      if (item instanceof Throwable t) {
        Status status = Status.fromThrowable(t);
        throw new CheckFailed("the stream failed with " + status.getCode() + " (" + status.getDescription()
            + ") while waiting for " + waitingFor);
      }
      SubscribeResponse response = (SubscribeResponse) item;
      if (!response.hasHeartbeat()) {
        return response;
      }
    }
  }

  /** close cancels the call (the client going away, as an app does when backgrounded); later items are dropped. */
  @Override
  public void close() {
    ClientCallStreamObserver<SubscribeRequest> c = call;
    if (c != null) {
      c.cancel("client closed the stream", null);
    }
  }
}
