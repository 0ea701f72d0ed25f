  NEW.{{column}} := {{schema}}.pseudonym(NEW.{{column}}, NEW.{{timeColumn}});
