// pgjdbc + HikariCP against a server with an idle policy (tests/e2e/test_clients.py).
// Usage: java -cp HikariCP.jar:postgresql.jar:slf4j-api.jar:slf4j-nop.jar HikariIdle.java
//        HOST PORT CASE=APPLICATION ...
// CASE "defaults": HikariCP's defaults (pool of 10, minimumIdle = maximumPoolSize).
// Warms each pool to 10 connections, prints "warm", waits for a line on stdin,
// runs 50 queries per pool and prints one line per case: CASE ok errors.
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.sql.Connection;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public class HikariIdle {
  public static void main(String[] args) throws Exception {
    String host = args[0];
    String port = args[1];
    Map<String, HikariDataSource> pools = new LinkedHashMap<>();
    for (int i = 2; i < args.length; i++) {
      String[] kv = args[i].split("=", 2);
      HikariConfig cfg = new HikariConfig();
      cfg.setJdbcUrl("jdbc:postgresql://" + host + ":" + port + "/postgres?ApplicationName=" + kv[1]);
      cfg.setUsername("postgres");
      cfg.setMaximumPoolSize(10);
      pools.put(kv[0], new HikariDataSource(cfg));
    }
    for (HikariDataSource ds : pools.values()) {
      List<Connection> held = new ArrayList<>();
      for (int i = 0; i < 10; i++) held.add(ds.getConnection());
      for (Connection c : held) c.close();
    }
    System.out.println("warm");
    System.out.flush();
    new BufferedReader(new InputStreamReader(System.in)).readLine();
    for (Map.Entry<String, HikariDataSource> e : pools.entrySet()) {
      int ok = 0;
      int errors = 0;
      for (int i = 0; i < 50; i++) {
        try (Connection c = e.getValue().getConnection(); Statement s = c.createStatement()) {
          s.execute("SELECT 1");
          ok++;
        } catch (Exception ex) {
          errors++;
        }
      }
      System.out.println(e.getKey() + " " + ok + " " + errors);
      e.getValue().close();
    }
  }
}
