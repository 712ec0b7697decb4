package com.chat.client;

import static com.chat.client.CheckFailed.check;

import com.chat.v1.AddMemberRequest;
import com.chat.v1.AddMemberResponse;
import com.chat.v1.CreateGroupRequest;
import com.chat.v1.Group;
import com.chat.v1.GroupCursor;
import com.chat.v1.GroupEvent;
import com.chat.v1.GroupPosition;
import com.chat.v1.ListMessagesRequest;
import com.chat.v1.ListMessagesResponse;
import com.chat.v1.MarkReadRequest;
import com.chat.v1.Message;
import com.chat.v1.SendMessageRequest;
import com.chat.v1.SendMessageResponse;
import com.chat.v1.StreamReady;
import com.chat.v1.SubscribeRequest;
import com.chat.v1.SubscribeResponse;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * ClientCheck drives a chat server end to end as a mobile client would, over grpc-okhttp with generated stubs, and
 * checks the delivery guarantees of chat.v1 (dense per-group seq, exactly-once in-order streams across a reconnect
 * with a cursor, idempotent sends, ordered history). It prints one "ok ..." line per passed check and "java-client:
 * all checks passed" at the end; on the first violation it prints "java-client: FAILED: ..." to stderr and exits 1.
 *
 * <p>The server URL comes from the system property {@code chat.url}, else the environment variable
 * {@code CHAT_URL}, else the first argument.
 */
public final class ClientCheck {
  static final int LIVE = 100;
  static final int MISSED = 20;
  static final int AFTER_RESUME = 5;

  private final Session alice;
  private final Session bob;
  private final String run = UUID.randomUUID().toString().substring(0, 8);
  /** sent holds every message alice sent, in send order (which is seq order: sends are sequential). */
  private final List<Message> sent = new ArrayList<>();
  private String groupId;
  private long joinSeq;
  /** epoch is the group's timeline epoch as the first StreamReady reported it: bob's cursor carries it. */
  private String epoch;

  private ClientCheck(Session alice, Session bob) {
    this.alice = alice;
    this.bob = bob;
  }

  public static void main(String[] args) throws Exception {
    String url = System.getProperty("chat.url");
    if (url == null || url.isEmpty()) url = System.getenv("CHAT_URL");
    if ((url == null || url.isEmpty()) && args.length > 0) url = args[0];
    if (url == null || url.isEmpty()) {
      System.err.println("java-client: FAILED: no server URL: pass -Dchat.url=http://127.0.0.1:8080 (or CHAT_URL)");
      System.exit(2);
    }
    ManagedChannel channel = null;
    int exit = 0;
    try {
      channel = Channels.open(url);
      System.out.println("java-client: checking " + url + " over grpc-okhttp");
      String suffix = UUID.randomUUID().toString().replace("-", "").substring(0, 12);
      Session alice = Session.register(channel, "java_a_" + suffix, "java-client-password-a");
      Session bob = Session.register(channel, "java_b_" + suffix, "java-client-password-b");
      new ClientCheck(alice, bob).run();
      System.out.println("java-client: all checks passed");
    } catch (CheckFailed e) {
      System.err.println("java-client: FAILED: " + e.getMessage());
      exit = 1;
    } catch (StatusRuntimeException e) {
      Status s = e.getStatus();
      String why = s.getDescription() != null ? s.getDescription()
          : s.getCause() != null ? s.getCause().toString() : "no description";
      System.err.println("java-client: FAILED: a call failed with " + s.getCode() + ": " + why);
      exit = 1;
    } finally {
      if (channel != null) {
        channel.shutdownNow();
        channel.awaitTermination(10, TimeUnit.SECONDS);
      }
    }
    // exec:java runs main inside Maven's JVM: a non-zero exit status is how Maven (and CI) learn of a failure.
    if (exit != 0) System.exit(exit);
  }

  private void run() throws InterruptedException {
    setUpGroup();
    long lastSeen = liveDelivery();
    resume(lastSeen);
    history();
  }

  /** setUpGroup: alice creates a group and adds bob, whose member_added event takes the group's head seq. */
  private void setUpGroup() {
    Group group = alice.groups()
        .createGroup(CreateGroupRequest.newBuilder().setName("java client " + run).build())
        .getGroup();
    groupId = group.getGroupId();
    check(!groupId.isEmpty(), "CreateGroup returned no group_id");
    AddMemberResponse added = alice.groups()
        .addMember(AddMemberRequest.newBuilder().setGroupId(groupId).setUsername(bob.user.getUsername()).build());
    joinSeq = added.getSeq();
    check(joinSeq == group.getHeadSeq() + 1, "AddMember took seq %d, expected the next after the head %d",
        joinSeq, group.getHeadSeq());
    check(added.getMember().getUser().getUserId().equals(bob.user.getUserId()), "AddMember added %s, not bob",
        added.getMember().getUser().getUserId());
    System.out.printf("ok registered 2 users; group %s; bob added at seq %d%n", groupId, joinSeq);
  }

  /**
   * liveDelivery: bob subscribes (no cursor: starts at the head), alice sends LIVE messages, and bob's stream carries
   * exactly those, once each, in seq order, with the right message at each seq; then bob leaves. Returns the last seq
   * bob saw.
   */
  private long liveDelivery() throws InterruptedException {
    try (Subscription stream = Subscription.open(bob.streams(), SubscribeRequest.getDefaultInstance())) {
      GroupPosition start = ready(stream, "StreamReady of the first subscription");
      check(start.getSeq() == joinSeq && start.getHeadSeq() == joinSeq,
          "a subscription without a cursor should start at the head %d, got seq %d head %d",
          joinSeq, start.getSeq(), start.getHeadSeq());
      epoch = start.getEpoch();
      List<Message> batch = send(LIVE);
      expectDense(batch, joinSeq + 1);
      expectEvents(stream, batch, "live message");
      long last = batch.get(batch.size() - 1).getSeq();
      expectNothingBefore(stream, last, "after the live messages");
      System.out.printf("ok live: %d messages at seq %d..%d, each once, in order, the right message at each seq%n",
          LIVE, batch.get(0).getSeq(), last);
      return last;
    }
  }

  /**
   * resume: while bob is away alice sends MISSED messages and retries one send; bob resubscribes with its cursor
   * (the last seq it saw and the epoch of its StreamReady) and gets exactly the missed ones, then live ones, with no
   * duplicate and no event for either retry.
   */
  private void resume(long lastSeen) throws InterruptedException {
    List<Message> missed = send(MISSED);
    expectDense(missed, lastSeen + 1);
    retry(sent.get(4));

    GroupCursor cursor = GroupCursor.newBuilder().setGroupId(groupId).setSeq(lastSeen).setEpoch(epoch).build();
    try (Subscription stream = Subscription.open(bob.streams(),
        SubscribeRequest.newBuilder().addCursors(cursor).build())) {
      GroupPosition start = ready(stream, "StreamReady of the resumed subscription");
      long head = missed.get(missed.size() - 1).getSeq();
      check(start.getSeq() == lastSeen, "resumed stream starts after seq %d, not after the cursor %d",
          start.getSeq(), lastSeen);
      check(start.getHeadSeq() == head, "resumed stream reports head %d, expected %d", start.getHeadSeq(), head);
      check(start.getEpoch().equals(epoch), "resumed stream reports epoch %s, the cursor had %s",
          start.getEpoch(), epoch);
      expectEvents(stream, missed, "missed message");

      List<Message> live = send(AFTER_RESUME);
      expectDense(live, head + 1);
      retry(live.get(0));
      expectEvents(stream, live, "live message after the resume");
      long last = live.get(live.size() - 1).getSeq();
      expectNothingBefore(stream, last, "after the resume");
      System.out.printf("ok resume: cursor seq %d replayed exactly the %d missed (seq %d..%d), then %d live"
          + " (seq %d..%d), no duplicate%n", lastSeen, MISSED, missed.get(0).getSeq(), head, AFTER_RESUME,
          live.get(0).getSeq(), last);
    }
  }

  /** history: ListMessages pages forward from bob's join through every message, in order, with the right texts. */
  private void history() {
    List<Message> got = new ArrayList<>();
    long after = joinSeq;
    int pages = 0;
    while (true) {
      ListMessagesResponse page = bob.messages().listMessages(
          ListMessagesRequest.newBuilder().setGroupId(groupId).setLimit(50).setAfterSeq(after).build());
      pages++;
      check(pages <= 10, "ListMessages kept saying has_more after %d pages", pages);
      got.addAll(page.getMessagesList());
      if (!page.getHasMore()) break;
      check(page.getMessagesCount() > 0, "ListMessages returned an empty page with has_more");
      after = page.getMessages(page.getMessagesCount() - 1).getSeq();
    }
    check(got.size() == sent.size(), "history has %d messages after seq %d, alice sent %d",
        got.size(), joinSeq, sent.size());
    for (int i = 0; i < sent.size(); i++) {
      Message want = sent.get(i);
      Message have = got.get(i);
      check(have.getSeq() == want.getSeq() && have.getMessageId().equals(want.getMessageId())
              && have.getText().equals(want.getText())
              && have.getClientMessageId().equals(want.getClientMessageId()),
          "history item %d is seq %d \"%s\" (%s), expected seq %d \"%s\" (%s)", i, have.getSeq(), have.getText(),
          have.getMessageId(), want.getSeq(), want.getText(), want.getMessageId());
    }
    System.out.printf("ok history: %d messages in seq order with the right texts (%d pages)%n", got.size(), pages);
  }

  /** send sends n messages from alice one after another, each with a fresh client_message_id. */
  private List<Message> send(int n) {
    List<Message> out = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      int number = sent.size() + 1;
      SendMessageResponse res = alice.messages().sendMessage(SendMessageRequest.newBuilder()
          .setGroupId(groupId)
          .setText("java message " + number)
          .setClientMessageId("java-" + run + "-" + number)
          .build());
      check(!res.getDuplicate(), "first send of message %d came back as a duplicate", number);
      check(res.getMessage().getText().equals("java message " + number), "message %d stored as \"%s\"",
          number, res.getMessage().getText());
      sent.add(res.getMessage());
      out.add(res.getMessage());
    }
    return out;
  }

  /** retry resends {@code original} with its client_message_id: the server must return the original, same seq. */
  private void retry(Message original) {
    SendMessageResponse res = alice.messages().sendMessage(SendMessageRequest.newBuilder()
        .setGroupId(groupId)
        .setText(original.getText())
        .setClientMessageId(original.getClientMessageId())
        .build());
    check(res.getDuplicate(), "a retried send (client_message_id %s) was not reported as a duplicate",
        original.getClientMessageId());
    check(res.getMessage().getSeq() == original.getSeq() && res.getMessage().getMessageId().equals(original.getMessageId()),
        "a retried send returned seq %d id %s, the original is seq %d id %s", res.getMessage().getSeq(),
        res.getMessage().getMessageId(), original.getSeq(), original.getMessageId());
    System.out.printf("ok retry: client_message_id %s returned the original seq %d (duplicate=true)%n",
        original.getClientMessageId(), original.getSeq());
  }

  /** ready reads the first item, which must be StreamReady listing the group; returns the group's position. */
  private GroupPosition ready(Subscription stream, String what) throws InterruptedException {
    SubscribeResponse first = stream.next(what);
    check(first.hasReady(), "the first stream item is %s, not StreamReady", first.getPayloadCase());
    StreamReady ready = first.getReady();
    check(ready.getHeartbeatIntervalSeconds() > 0, "StreamReady has no heartbeat interval");
    for (GroupPosition p : ready.getGroupsList()) {
      if (p.getGroupId().equals(groupId)) {
        check(!p.getEpoch().isEmpty(), "StreamReady has no epoch for the group");
        return p;
      }
    }
    throw new CheckFailed("StreamReady does not list group " + groupId);
  }

  /** expectDense checks that the messages took consecutive seqs from {@code from}. */
  private static void expectDense(List<Message> batch, long from) {
    for (int i = 0; i < batch.size(); i++) {
      check(batch.get(i).getSeq() == from + i, "sent message %d got seq %d, expected %d (seq must be dense)",
          i, batch.get(i).getSeq(), from + i);
    }
  }

  /** expectEvents reads one event per message and checks it is that message, at its seq, in order. */
  private void expectEvents(Subscription stream, List<Message> want, String what) throws InterruptedException {
    for (Message m : want) {
      SubscribeResponse item = stream.next(what + " at seq " + m.getSeq());
      check(item.hasEvent(), "expected the event at seq %d, got a %s item", m.getSeq(), item.getPayloadCase());
      GroupEvent e = item.getEvent();
      check(e.getGroupId().equals(groupId) && e.getSeq() == m.getSeq(),
          "expected seq %d of group %s, got seq %d of group %s (duplicate, gap or reorder)",
          m.getSeq(), groupId, e.getSeq(), e.getGroupId());
      check(e.hasMessage(), "the event at seq %d is a %s, expected a message", e.getSeq(), e.getKindCase());
      Message got = e.getMessage();
      check(got.getMessageId().equals(m.getMessageId()) && got.getText().equals(m.getText())
              && got.getClientMessageId().equals(m.getClientMessageId()),
          "the event at seq %d carries \"%s\" (%s), expected \"%s\" (%s)", e.getSeq(), got.getText(),
          got.getMessageId(), m.getText(), m.getMessageId());
      check(e.getActor().getUserId().equals(alice.user.getUserId()), "the event at seq %d names actor %s, not alice",
          e.getSeq(), e.getActor().getUserId());
    }
  }

  /**
   * expectNothingBefore proves the stream holds no further event (a duplicate, or an event for a retried send):
   * bob moves its read marker to {@code seq}, and the next item must be the ReadMarker that call causes.
   */
  private void expectNothingBefore(Subscription stream, long seq, String where) throws InterruptedException {
    long marker = bob.groups()
        .markRead(MarkReadRequest.newBuilder().setGroupId(groupId).setSeq(seq).build())
        .getLastReadSeq();
    check(marker == seq, "MarkRead(%d) left the marker at %d", seq, marker);
    SubscribeResponse item = stream.next("the read marker " + where);
    check(item.hasReadMarker(), "an unexpected %s item (event seq %d) came %s, before the read marker",
        item.getPayloadCase(), item.hasEvent() ? item.getEvent().getSeq() : 0, where);
    check(item.getReadMarker().getGroupId().equals(groupId) && item.getReadMarker().getSeq() == seq,
        "read marker for %s at %d, expected %s at %d", item.getReadMarker().getGroupId(),
        item.getReadMarker().getSeq(), groupId, seq);
  }
}
